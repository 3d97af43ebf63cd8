"""Batched vs one-question-at-a-time sampling on the same model and settings.

    python bench/generation.py [--model embedded] [--n 16] [--max-new-tokens 64] [--out FILE]
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import bench_parser, print_table, write_result  # noqa: E402


def main() -> None:
    parser = bench_parser()
    parser.add_argument("--n", type=int, default=64, help="questions, all in one batch when batched")
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--backend", choices=["hf", "vllm", "both"], default="hf")
    args = parser.parse_args()

    from cotlab.data import load_records
    from cotlab.generate import GenerationStats, SamplingConfig, generate, vllm_available, vllm_generate
    from cotlab.models import load_model, resolve_model
    from cotlab.prompts import build_messages, render_prompt

    model, tokenizer = load_model(args.model)
    prompts = [render_prompt(tokenizer, build_messages(r.question, "think")) for r in load_records(args.data, n=args.n, split="test")]
    rows = []
    # Sampled at T=0.7 with a fixed seed: the same settings for every configuration.
    for label, batch in [("one at a time", 1), ("batched", len(prompts))]:
        stats = GenerationStats()
        generate(model, tokenizer, prompts, SamplingConfig(max_new_tokens=args.max_new_tokens, temperature=0.7, batch_size=batch),
                 progress=False, stats=stats)
        rows.append({"config": f"hf {label}", "sequences": stats.sequences, "tokens": stats.tokens,
                     "seconds": round(stats.seconds, 2), "tokens_per_second": round(stats.tokens_per_second, 1)})
    if args.backend in ("vllm", "both") and vllm_available():
        del model
        stats = GenerationStats()
        vllm_generate(resolve_model(args.model), prompts, SamplingConfig(max_new_tokens=args.max_new_tokens, temperature=0.7), stats=stats)
        rows.append({"config": "vllm", "sequences": stats.sequences, "tokens": stats.tokens,
                     "seconds": round(stats.seconds, 2), "tokens_per_second": round(stats.tokens_per_second, 1)})
    base = rows[0]["tokens_per_second"]
    for row in rows:
        row["ratio_vs_one_at_a_time"] = round(row["tokens_per_second"] / base, 2)
    print_table(rows, ["config", "sequences", "tokens", "seconds", "tokens_per_second", "ratio_vs_one_at_a_time"])
    path = write_result("generation", {"model": args.model, "n": args.n, "max_new_tokens": args.max_new_tokens, "rows": rows}, args.out)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
