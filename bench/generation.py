"""cotlab's generation vs what a user would write: `model.generate` on one left-padded fp32 batch.

    python bench/generation.py [--model embedded] [--n 64] [--max-new-tokens 64] [--repeats 3]
                               [--fp32] [--bf16] [--int8] [--torchao] [--llama-cpp] [--fixed-length]
                               [--backend hf|vllm|both] [--out FILE]

Greedy decoding on the same questions.  "plain batched" left-pads all n prompts into one batch
and calls `model.generate`; "cotlab" is `cotlab.generate.generate` (shared prompt prefix,
finished rows leave, free slots refill) in the dtype the decoding policy picks
(`cotlab.models.decoding_dtype`); --fp32, --bf16 and --int8 add cotlab in those (int8:
`cotlab.quantize`, CPU only); --torchao adds the same W8A8 scheme through torchao's
`Int8DynamicActivationInt8WeightConfig` (the library cotlab.quantize measured itself against;
torchao comes with --dev); --llama-cpp adds llama.cpp (llama-cpp-python, the `bench` extra) on
the embedded model's own GGUF file, the same prompt tokens, greedy, all sequences decoding in one
batch (without llama-cpp-python the row is skipped with a one-line note).  --backend both adds a
"vllm" row (`cotlab.generate.vllm_generate`, a GPU with vLLM installed; the engine's start-up is
not timed), --backend vllm has it in place of cotlab's rows.  Configurations alternate,
`--repeats` times each, and each row reports the median and range of tokens/s.

Tokens/s on natural completions depends on where each row's completions stop (a model that stops
early keeps fewer rows in flight), so a lower-precision row can look slower or faster for reasons
that are not its arithmetic.  --fixed-length also times every row decoding exactly
--max-new-tokens tokens per question (stop tokens ignored; HF's `min_new_tokens` for plain
batched), the like-for-like measure of the decoder, as `fixed_length_tokens_per_second` and
`fixed_length_ratio_vs_plain_batched`; agreement is always measured on natural completions.
`greedy_agreement` is the share of questions whose extracted final answer is the same as plain
batched fp32's; `token_agreement` the share of positions along plain fp32's completions where the
row's model picks the same next token (teacher-forced: one early difference does not count as
every later token's; not for the llama.cpp and vLLM rows, whose logits are not at hand).
`peak_fraction` (CPU runs) is 2 x parameters x tokens/s over this machine's matrix-product peak in
the row's precision, measured in the same run on the model's MLP shape (`common.matmul_peaks`;
llama.cpp's Q4_1 products run on int8 dot products, so its row uses the int8 peak); prompt tokens
are not counted.
"""

from __future__ import annotations

import contextlib
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import bench_parser, load_average, matmul_peaks, print_table, write_result  # noqa: E402


def plain_batched(model, tokenizer, prompts: list[str], max_new_tokens: int) -> tuple[list[str], int, float]:
    """(texts, generated tokens, seconds) of one `model.generate` call on a left-padded batch."""
    import torch

    from cotlab.generate import _stop_ids

    tokenizer.padding_side = "left"
    inputs = tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False).to(model.device)
    stop_ids = _stop_ids(tokenizer, model)
    # No stop ids: `stops_ignored` is on, so every row decodes max_new_tokens (HF suppresses its EOS).
    stopping = {"eos_token_id": stop_ids} if stop_ids else {"min_new_tokens": max_new_tokens}
    start = time.perf_counter()
    with torch.no_grad():
        output = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=tokenizer.pad_token_id,
                                **stopping)
    seconds = time.perf_counter() - start
    texts, tokens = [], 0
    for ids in output[:, inputs["input_ids"].shape[1] :].tolist():
        length = next((i + 1 for i, token in enumerate(ids) if token in stop_ids), len(ids))
        texts.append(tokenizer.decode(ids[:length], skip_special_tokens=True).strip())
        tokens += length
    return texts, tokens, seconds


@contextlib.contextmanager
def stops_ignored():
    """Every row below decodes until max_new_tokens: cotlab's stop-token lookup, which all rows
    call, answers with none."""
    import cotlab.generate

    real = cotlab.generate._stop_ids
    cotlab.generate._stop_ids = lambda tokenizer, model: []
    try:
        yield
    finally:
        cotlab.generate._stop_ids = real


def torchao_int8(model_name: str):
    """The model with torchao's W8A8 dynamic int8 Linear layers (the --torchao row)."""
    import torch
    from torchao.quantization import Int8DynamicActivationInt8WeightConfig, quantize_

    from cotlab.models import load_model

    model = load_model(model_name, dtype="float32")[0]
    quantize_(model, Int8DynamicActivationInt8WeightConfig(), filter_fn=lambda module, name: isinstance(module, torch.nn.Linear))
    return model


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


class LlamaCppPeer:
    """Greedy decoding with llama.cpp's low-level batch API (llama-cpp-python's high-level `Llama`
    decodes one prompt at a time): each prompt is its own sequence with its own KV stream, the
    prompts are prefilled together in batches of up to `n_batch` tokens, then every live sequence
    decodes one token per `llama_decode` call, as llama.cpp's `batched` example does."""

    def __init__(self, path: str, encoded: list[list[int]], max_new_tokens: int, threads: int):
        import ctypes

        import llama_cpp as L

        self.L = L
        self._quiet = L.llama_log_callback(lambda level, text, data: None)  # kept: ctypes must not free it
        L.llama_log_set(self._quiet, ctypes.c_void_p(0))
        L.llama_backend_init()
        model_params = L.llama_model_default_params()
        # No AMX/repacked weight buffers: on this AMX Xeon llama.cpp's AMX backend segfaults in its
        # first matrix product (ggml-org/llama.cpp#20824); the plain CPU kernels (AVX-512 VNNI) run.
        model_params.use_extra_bufts = False
        self.model = L.llama_model_load_from_file(path.encode(), model_params)
        params = L.llama_context_default_params()
        self.n_batch = max(512, max(len(ids) for ids in encoded))
        # One KV stream per sequence (kv_unified off), as llama.h advises for many sequences that do
        # not share a large prefix: each step's attention then reads only its own sequence's cells.
        # With one unified cache every token attended over all 64 sequences' cells, masked: fixed-
        # length decoding ran at 82 tokens/s against 142 with separate streams (64 questions, 2 cores).
        # n_ctx is split evenly between the streams, so each gets room for the longest prompt.
        params.n_ctx = len(encoded) * (max(len(ids) for ids in encoded) + max_new_tokens + 16)
        params.n_batch, params.n_ubatch = self.n_batch, 512
        params.n_seq_max, params.kv_unified = len(encoded), False
        params.n_threads = params.n_threads_batch = threads
        self.ctx = L.llama_init_from_model(self.model, params)
        self.n_vocab = L.llama_vocab_n_tokens(L.llama_model_get_vocab(self.model))
        self.batch = L.llama_batch_init(self.n_batch, 0, 1)

    def _add(self, token: int, position: int, sequence: int, logits: bool) -> int:
        b = self.batch
        i = b.n_tokens
        b.token[i], b.pos[i], b.n_seq_id[i], b.logits[i] = token, position, 1, logits
        b.seq_id[i][0] = sequence
        b.n_tokens += 1
        return i

    def _decode(self, waiting: list[tuple[int, int]], generated: list[list[int]]) -> None:
        import numpy as np

        if self.L.llama_decode(self.ctx, self.batch) != 0:
            raise RuntimeError("llama_decode failed")
        for sequence, index in waiting:
            logits = np.ctypeslib.as_array(self.L.llama_get_logits_ith(self.ctx, index), shape=(self.n_vocab,))
            generated[sequence].append(int(logits.argmax()))
        self.batch.n_tokens = 0

    def generate(self, encoded: list[list[int]], max_new_tokens: int, stop_ids: list[int]) -> list[list[int]]:
        self.L.llama_memory_clear(self.L.llama_get_memory(self.ctx), True)
        generated: list[list[int]] = [[] for _ in encoded]
        waiting: list[tuple[int, int]] = []
        self.batch.n_tokens = 0
        for sequence, ids in enumerate(encoded):  # prefill, several prompts per batch
            if self.batch.n_tokens + len(ids) > self.n_batch:
                self._decode(waiting, generated)
                waiting = []
            for position, token in enumerate(ids):
                index = self._add(token, position, sequence, position == len(ids) - 1)
            waiting.append((sequence, index))
        self._decode(waiting, generated)
        live = list(range(len(encoded)))
        while True:
            live = [s for s in live if generated[s][-1] not in stop_ids and len(generated[s]) < max_new_tokens]
            if not live:
                return generated
            waiting = [(s, self._add(generated[s][-1], len(encoded[s]) + len(generated[s]) - 1, s, True)) for s in live]
            self._decode(waiting, generated)


def llama_cpp_runner(model_name: str, tokenizer, prompts: list[str], max_new_tokens: int):
    """A `run` function for the llama.cpp row, or None (with a printed note) where it cannot run."""
    import importlib.util

    import torch

    from cotlab.models import EMBEDDED, GGUF_FILE, _gguf_dir

    if importlib.util.find_spec("llama_cpp") is None:
        print("llama.cpp row skipped: llama-cpp-python is not installed (pip install 'cotlab[bench]')")
        return None
    try:
        import llama_cpp  # noqa: F401
    except ImportError as e:
        print(f"llama.cpp row skipped: llama-cpp-python does not import ({e})")
        return None
    if model_name != EMBEDDED:
        print(f"llama.cpp row skipped: it runs the embedded model's GGUF file, not {model_name}")
        return None
    encoded = [tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts]
    peer = LlamaCppPeer(str(_gguf_dir() / GGUF_FILE), encoded, max_new_tokens, torch.get_num_threads())

    def run(model, tokenizer, prompts, max_new_tokens):
        import cotlab.generate

        stop_ids = cotlab.generate._stop_ids(tokenizer, model)  # looked up now: stops_ignored may be on
        start = time.perf_counter()
        generated = peer.generate(encoded, max_new_tokens, stop_ids)
        seconds = time.perf_counter() - start
        texts = [tokenizer.decode(ids, skip_special_tokens=True).strip() for ids in generated]
        return texts, sum(len(ids) for ids in generated), seconds

    return run


def token_agreement(model, reference, tokenizer, prompts: list[str], completions: list[str]) -> float:
    """Share of completion positions where `model`'s next token (argmax) is `reference`'s, both
    reading the same text: the prompts followed by `reference`'s own greedy completions."""
    import torch

    tokenizer.padding_side = "right"
    batch = tokenizer([p + c for p, c in zip(prompts, completions)], return_tensors="pt", padding=True, add_special_tokens=False)
    starts = [len(tokenizer(p, add_special_tokens=False)["input_ids"]) - 1 for p in prompts]
    ends = (batch["attention_mask"].sum(dim=1) - 1).tolist()
    same = total = 0
    with torch.no_grad():
        for i in range(0, len(prompts), 16):
            rows = slice(i, i + 16)
            want = reference(input_ids=batch["input_ids"][rows], attention_mask=batch["attention_mask"][rows]).logits.argmax(-1)
            got = model(input_ids=batch["input_ids"][rows], attention_mask=batch["attention_mask"][rows]).logits.argmax(-1)
            for row, (start, end) in enumerate(zip(starts[rows], ends[rows])):
                same += int((got[row, start:end] == want[row, start:end]).sum())
                total += max(0, end - start)
    return same / total if total else 1.0


def main() -> None:
    parser = bench_parser()
    parser.add_argument("--n", type=int, default=64, help="questions, all in one batch")
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3, help="runs per configuration, alternating configurations")
    parser.add_argument("--fp32", action="store_true", help="also run cotlab's path in fp32 where auto picks another dtype")
    parser.add_argument("--bf16", action="store_true", help="also run cotlab's path in bf16 (CPUs with bf16 instructions, GPUs)")
    parser.add_argument("--backend", choices=["hf", "vllm", "both"], default="hf",
                        help="hf: cotlab's decoder; vllm: a vLLM row instead; both: a vLLM row beside cotlab's (vLLM needs a GPU)")
    parser.add_argument("--int8", action="store_true", help="also run cotlab's path with int8 Linear layers (CPU; cotlab.quantize)")
    parser.add_argument("--torchao", action="store_true", help="also run torchao's W8A8 int8 Linear layers (CPU; torchao)")
    parser.add_argument("--llama-cpp", action="store_true", help="also run llama.cpp on the embedded GGUF (llama-cpp-python)")
    parser.add_argument("--fixed-length", action="store_true",
                        help="also time every row decoding exactly --max-new-tokens per question (stop tokens ignored)")
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
    from cotlab.models import count_parameters, cpu_class, decoding_dtype, dtype_name, load_model
    from cotlab.prompts import build_messages, render_prompt
    from cotlab.verify import extract_answer

    load_before = load_average()
    fp32, tokenizer = load_model(args.model, dtype="float32")
    auto = decoding_dtype("auto")
    configs = [("plain batched", "float32", fp32, plain_batched), ("cotlab", dtype_name(auto),
               fp32 if auto == torch.float32 else load_model(args.model, dtype=auto)[0], cotlab_generate)]
    for flag, dtype in ((args.fp32, "float32"), (args.bf16, "bfloat16"), (args.int8, "int8")):
        if flag and dtype_name(auto) != dtype:
            configs.append(("cotlab", dtype, fp32 if dtype == "float32" else load_model(args.model, dtype=dtype)[0], cotlab_generate))
    if args.torchao:
        configs.append(("torchao", "int8", torchao_int8(args.model), cotlab_generate))
    if args.backend != "hf":
        configs = configs[:1] if args.backend == "vllm" else configs
        configs.append(("vllm", vllm_dtype(), vllm_model(args.model)[0], vllm_row_generate))
    prompts = [render_prompt(tokenizer, build_messages(r.question, "think")) for r in load_records(args.data, n=args.n, split="test")]
    if args.llama_cpp:
        runner = llama_cpp_runner(args.model, tokenizer, prompts, args.max_new_tokens)
        if runner is not None:
            configs.append(("llama.cpp", "q4_1", fp32, runner))  # fp32: only for its stop tokens
    config = fp32.config
    # The peaks are this CPU's: a GPU run (cotlab's rows on the GPU, vLLM) reports no peak_fraction.
    peaks = matmul_peaks(config.hidden_size, config.intermediate_size, len(prompts)) if fp32.device.type == "cpu" else None
    parameters = count_parameters(fp32)["total"]
    speeds: list[list[float]] = [[] for _ in configs]
    fixed_speeds: list[list[float]] = [[] for _ in configs]
    texts, tokens = [None] * len(configs), [0] * len(configs)
    for _ in range(args.repeats):
        for i, (_, _, model, run) in enumerate(configs):
            completions, tokens[i], seconds = run(model, tokenizer, prompts, args.max_new_tokens)
            texts[i] = texts[i] or completions
            speeds[i].append(tokens[i] / seconds)
            if args.fixed_length:
                with stops_ignored():
                    _, count, seconds = run(model, tokenizer, prompts, args.max_new_tokens)
                if count != len(prompts) * args.max_new_tokens:
                    raise SystemExit(f"bench/generation.py: --fixed-length: {configs[i][0]} decoded {count} tokens, "
                                     f"not {len(prompts)} x {args.max_new_tokens}")
                fixed_speeds[i].append(count / seconds)
    answers = [[extract_answer(t) for t in completions] for completions in texts]
    rows = []
    for (label, dtype, model, _), speed, fixed, answer, count in zip(configs, speeds, fixed_speeds, answers, tokens):
        rate = statistics.median(speed)
        peak = peaks["gflops"].get("int8" if dtype == "q4_1" else dtype) if peaks else None
        fixed_row = {"fixed_length_tokens_per_second": round(statistics.median(fixed), 1),
                     "fixed_length_tokens_per_second_range": [round(min(fixed), 1), round(max(fixed), 1)],
                     "fixed_length_ratio_vs_plain_batched": round(statistics.median(fixed) / statistics.median(fixed_speeds[0]), 2),
                     "fixed_length_peak_fraction": round(2 * parameters * statistics.median(fixed) / 1e9 / peak, 3) if peak else None,
                     } if fixed else {}
        rows.append({"config": label, "dtype": dtype, "sequences": len(prompts), "tokens": count,
                     "tokens_per_second": round(rate, 1),
                     "tokens_per_second_range": [round(min(speed), 1), round(max(speed), 1)],
                     "ratio_vs_plain_batched": round(rate / statistics.median(speeds[0]), 2),
                     "greedy_agreement": round(sum(a == b for a, b in zip(answer, answers[0])) / len(prompts), 3),
                     "token_agreement": None if label in ("llama.cpp", "vllm") else
                     round(token_agreement(model, fp32, tokenizer, prompts, texts[0]), 3),
                     "achieved_gflops": round(2 * parameters * rate / 1e9, 1),
                     "peak_fraction": round(2 * parameters * rate / 1e9 / peak, 3) if peak else None, **fixed_row})
    print_table(rows, ["config", "dtype", "tokens", "tokens_per_second", "tokens_per_second_range", "ratio_vs_plain_batched",
                       "greedy_agreement", "token_agreement", "peak_fraction"]
                + ["fixed_length_tokens_per_second", "fixed_length_ratio_vs_plain_batched"] * args.fixed_length)
    if peaks:
        print(f"matmul peaks, G(FL)OP/s on {peaks['shape']}: {peaks['gflops']}")
    speed = "fixed_length_tokens_per_second" if args.fixed_length else "tokens_per_second"  # the like-for-like measure when there
    best = max((row for row in rows if row["config"] == "cotlab"), key=lambda row: row[speed], default=None)
    peer = next((row for row in rows if row["config"] == "llama.cpp"), None)
    result = {"model": args.model, "n": args.n, "max_new_tokens": args.max_new_tokens, "repeats": args.repeats,
              "ratio_vs_plain_batched": rows[1]["ratio_vs_plain_batched"], "greedy_agreement": rows[1]["greedy_agreement"],
              "dtype_auto": dtype_name(auto), "best_cotlab_dtype": best and best["dtype"],
              "best_ratio_vs_plain_batched": best and best["ratio_vs_plain_batched"],
              "best_fixed_length_ratio_vs_plain_batched": best and best.get("fixed_length_ratio_vs_plain_batched"),
              "ratio_vs_llama_cpp": round(best["tokens_per_second"] / peer["tokens_per_second"], 2) if best and peer else None,
              "fixed_length_ratio_vs_llama_cpp": round(best[speed] / peer[speed], 2) if best and peer and args.fixed_length else None,
              "fixed_length": args.fixed_length, "cpu_class": cpu_class(),
              # oneDNN's ISA cap, if set: ONEDNN_MAX_CPU_ISA=AVX512_CORE_BF16 runs an AMX CPU's bf16 and int8
              # products on its AVX-512 (VNNI) kernels, as a CPU without AMX would.
              "onednn_max_cpu_isa": os.environ.get("ONEDNN_MAX_CPU_ISA"),
              "parameters": parameters, "matmul_peaks": peaks, "load_average": {"before": load_before, "after": load_average()},
              "rows": rows}
    path = write_result("generation", result, args.out)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
