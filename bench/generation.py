"""cotlab's generation vs what a user would write: `model.generate` on one left-padded fp32 batch.

    python bench/generation.py [--model embedded] [--n 64] [--max-new-tokens 64] [--repeats 3] [--bf16] [--backend hf|vllm|both] [--out FILE]

Greedy decoding on the same questions.  "plain batched" left-pads all n prompts into one batch
and calls `model.generate`; "cotlab" is `cotlab.generate.generate` (shared prompt prefix,
finished rows leave, free slots refill) in the dtype the policy picks; --bf16 adds cotlab in
bf16.  --backend both adds a "vllm" row (`cotlab.generate.vllm_generate`, a GPU with vLLM
installed; the engine's start-up is not timed), --backend vllm has it in place of cotlab's rows.
Configurations alternate, `--repeats` times each, and each row reports the median and range of
tokens/s; `greedy_agreement` is the share of questions whose extracted final answer is
the same as plain batched fp32's.
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import bench_parser, print_table, write_result  # noqa: E402


def plain_batched(model, tokenizer, prompts: list[str], max_new_tokens: int) -> tuple[list[str], int, float]:
    """(texts, generated tokens, seconds) of one `model.generate` call on a left-padded batch."""
    import torch

    from cotlab.generate import _stop_ids

    tokenizer.padding_side = "left"
    inputs = tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False).to(model.device)
    stop_ids = _stop_ids(tokenizer, model)
    start = time.perf_counter()
    with torch.no_grad():
        output = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=tokenizer.pad_token_id,
                                eos_token_id=stop_ids)
    seconds = time.perf_counter() - start
    texts, tokens = [], 0
    for ids in output[:, inputs["input_ids"].shape[1] :].tolist():
        length = next((i + 1 for i, token in enumerate(ids) if token in stop_ids), len(ids))
        texts.append(tokenizer.decode(ids[:length], skip_special_tokens=True).strip())
        tokens += length
    return texts, tokens, seconds


def cotlab_generate(model, tokenizer, prompts: list[str], max_new_tokens: int) -> tuple[list[str], int, float]:
    from cotlab.generate import GenerationStats, SamplingConfig, generate

    stats = GenerationStats()
    out = generate(model, tokenizer, prompts, SamplingConfig(max_new_tokens=max_new_tokens, batch_size=len(prompts)),
                   progress=False, stats=stats)
    return [c[0].text for c in out], stats.tokens, stats.seconds


def vllm_row_generate(model_path: str, tokenizer, prompts: list[str], max_new_tokens: int) -> tuple[list[str], int, float]:
    """`cotlab_generate`'s contract with vLLM, on the model by path (vLLM loads its own copy)."""
    from cotlab.generate import GenerationStats, SamplingConfig, vllm_generate

    stats = GenerationStats()
    out = vllm_generate(model_path, prompts, SamplingConfig(max_new_tokens=max_new_tokens, batch_size=len(prompts)), stats=stats,
                        progress=False)
    return [c[0].text for c in out], stats.tokens, stats.seconds


def main() -> None:
    parser = bench_parser()
    parser.add_argument("--n", type=int, default=64, help="questions, all in one batch")
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3, help="runs per configuration, alternating configurations")
    parser.add_argument("--bf16", action="store_true", help="also run cotlab's path in bf16 (CPUs with bf16 instructions, GPUs)")
    parser.add_argument("--backend", choices=["hf", "vllm", "both"], default="hf",
                        help="hf: cotlab's decoder; vllm: a vLLM row instead; both: a vLLM row beside cotlab's (vLLM needs a GPU)")
    args = parser.parse_args()
    from cotlab import CotlabError
    from cotlab.generate import choose_backend

    if args.backend != "hf":
        try:
            choose_backend("vllm")
        except CotlabError as e:
            raise SystemExit(f"bench/generation.py: --backend {args.backend}: {e}") from None

    import torch

    from cotlab.data import load_records
    from cotlab.generate import vllm_dtype, vllm_model
    from cotlab.models import load_model, resolve_dtype
    from cotlab.prompts import build_messages, render_prompt
    from cotlab.verify import extract_answer

    fp32, tokenizer = load_model(args.model, dtype="float32")
    auto = resolve_dtype("auto")
    configs = [("plain batched", "float32", fp32, plain_batched), ("cotlab", str(auto).removeprefix("torch."),
               fp32 if auto == torch.float32 else load_model(args.model, dtype=auto)[0], cotlab_generate)]
    if args.bf16 and auto != torch.bfloat16:
        configs.append(("cotlab", "bfloat16", load_model(args.model, dtype="bfloat16")[0], cotlab_generate))
    if args.backend != "hf":
        configs = configs[:1] if args.backend == "vllm" else configs
        configs.append(("vllm", vllm_dtype(), vllm_model(args.model)[0], vllm_row_generate))
    prompts = [render_prompt(tokenizer, build_messages(r.question, "think")) for r in load_records(args.data, n=args.n, split="test")]
    speeds: list[list[float]] = [[] for _ in configs]
    answers, tokens = [None] * len(configs), [0] * len(configs)
    for _ in range(args.repeats):
        for i, (_, _, model, run) in enumerate(configs):
            texts, tokens[i], seconds = run(model, tokenizer, prompts, args.max_new_tokens)
            answers[i] = answers[i] or [extract_answer(t) for t in texts]
            speeds[i].append(tokens[i] / seconds)
    rows = []
    for (label, dtype, _, _), speed, answer, count in zip(configs, speeds, answers, tokens):
        rows.append({"config": label, "dtype": dtype, "sequences": len(prompts), "tokens": count,
                     "tokens_per_second": round(statistics.median(speed), 1),
                     "tokens_per_second_range": [round(min(speed), 1), round(max(speed), 1)],
                     "ratio_vs_plain_batched": round(statistics.median(speed) / statistics.median(speeds[0]), 2),
                     "greedy_agreement": round(sum(a == b for a, b in zip(answer, answers[0])) / len(prompts), 3)})
    print_table(rows, ["config", "dtype", "sequences", "tokens", "tokens_per_second", "tokens_per_second_range",
                       "ratio_vs_plain_batched", "greedy_agreement"])
    result = {"model": args.model, "n": args.n, "max_new_tokens": args.max_new_tokens, "repeats": args.repeats,
              "ratio_vs_plain_batched": rows[1]["ratio_vs_plain_batched"], "greedy_agreement": rows[1]["greedy_agreement"], "rows": rows}
    path = write_result("generation", result, args.out)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
