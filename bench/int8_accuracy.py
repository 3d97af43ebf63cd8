"""Does int8 decoding change accuracy?  The same questions scored with fp32 and int8 weights.

    python bench/int8_accuracy.py [--model embedded] [--adapter DIR] [--n 200] [--max-new-tokens 64] [--out FILE]

Greedy, think style, the test split.  Reports each accuracy, the paired counts (int8 right where
fp32 is wrong and the reverse), the exact McNemar p-value (`cotlab.stats.compare_paired`), how
many completions are identical, and each side's tokens/s.  The adapter, if any, is merged into
the fp32 weights before quantising (`cotlab.models.load_int8`).
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import bench_parser, load_average, write_result  # noqa: E402


def main() -> None:
    parser = bench_parser()
    parser.add_argument("--adapter", help="a LoRA adapter folder (merged before quantising)")
    parser.add_argument("--n", type=int, default=200)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=64)
    args = parser.parse_args()

    from cotlab.data import load_records
    from cotlab.evaluate import evaluate
    from cotlab.generate import SamplingConfig
    from cotlab.models import load_model
    from cotlab.stats import compare_paired, paired_verdict

    load_before = load_average()
    records = load_records(args.data, n=args.n, split="test")
    sampling = SamplingConfig(max_new_tokens=args.max_new_tokens, batch_size=args.batch_size)
    results = {}
    for dtype in ("float32", "int8"):
        model, tokenizer = load_model(args.model, adapter=args.adapter, dtype=dtype)
        results[dtype] = evaluate(model, tokenizer, records, sampling=sampling, progress=False)
        del model
    fp32, int8 = results["float32"], results["int8"]
    comparison = compare_paired(int8.rows, fp32.rows, a="int8", b="fp32")
    identical = sum(a["completion"] == b["completion"] for a, b in zip(int8.rows, fp32.rows))
    print(paired_verdict(comparison))
    print(f"identical completions: {identical}/{len(records)}; tokens/s fp32 {fp32.summary.get('tokens_per_second')}, "
          f"int8 {int8.summary.get('tokens_per_second')}")
    result = {"model": args.model, "adapter": args.adapter, "n": len(records), "max_new_tokens": args.max_new_tokens,
              **comparison, "identical_completions": identical,
              "tokens_per_second": {k: r.summary.get("tokens_per_second") for k, r in results.items()},
              "verdict": paired_verdict(comparison), "load_average": {"before": load_before, "after": load_average()}}
    path = write_result("int8_accuracy" + ("_adapter" if args.adapter else ""), result, args.out)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
