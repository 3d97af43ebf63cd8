"""cotlab's SFT settings vs TRL's default SFTTrainer settings, same model, data and steps.

    python bench/sft.py [--model embedded] [--steps 8] [--qlora] [--dtype auto] [--repeats 3] [--eval-n 50] [--out FILE]

Each configuration trains in its own process (so peak memory is its own) on the same gold
chain_sum rows, then answers the same held-out questions greedily ("no loss of accuracy" is
part of the target, not only speed).  "trl-default" is SFTConfig() with only what the machine
needs (fp32 on CPU) and the model passed by name, as a first TRL user would write it; "cotlab" is
`cotlab.recipes`' SFT recipe for the profile: LoRA r=16 on every linear layer, and on a GPU bf16 plus
padding-free batching; "cotlab-qlora" is the same LoRA on an NF4 base (bitsandbytes).  cotlab's
rows train in --dtype (`cotlab.models.trainer_precision`: auto is bf16 only where it is faster).
Configurations alternate, --repeats times each; rows give the median tokens/s and its range, and
accuracy from the first run.
"""

from __future__ import annotations

import json
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import bench_parser, forward, load_average, matmul_peaks, print_table, run_child, write_result  # noqa: E402


def child(args) -> dict:
    import torch

    from cotlab.data import load_records
    from cotlab.evaluate import evaluate
    from cotlab.generate import SamplingConfig
    from cotlab.models import resolve_model, trainer_precision
    from cotlab.prompts import sft_example
    from cotlab.recipes import SFTRecipe
    from cotlab.training import build_sft_trainer, measure_training, precision_name

    rows = [sft_example(r.question, r.rationale, r.answer) for r in load_records(args.data, n=args.steps * args.batch, split="train")]
    with tempfile.TemporaryDirectory() as out:
        if args.config.startswith("cotlab"):
            gpu = torch.cuda.is_available()
            recipe = SFTRecipe(model=args.model, output_dir=out, max_steps=args.steps, per_device_train_batch_size=args.batch,
                               padding_free=gpu and args.config != "cotlab-padded", load_in_4bit=args.config == "cotlab-qlora",
                               logging_steps=1, save_steps=10**6, dtype=args.dtype)
            trainer, _ = build_sft_trainer(recipe, rows)
        else:
            from datasets import Dataset
            from trl import SFTConfig, SFTTrainer

            config = SFTConfig(output_dir=out, max_steps=args.steps, per_device_train_batch_size=args.batch, logging_steps=1,
                               save_strategy="no", report_to="none", **({} if torch.cuda.is_available() else trainer_precision("float32")))
            trainer = SFTTrainer(model=resolve_model(args.model), args=config, train_dataset=Dataset.from_list(rows))
        measured = measure_training(trainer)
    losses = [e["loss"] for e in trainer.state.log_history if "loss" in e]
    trainable = sum(p.numel() for p in trainer.model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in trainer.model.parameters())
    result = {"config": args.config, "precision": precision_name(trainer.args),
              "steps": trainer.state.global_step, "tokens": measured["train_tokens"],
              "seconds": measured["wall_seconds"], "tokens_per_second": measured["tokens_per_second"],
              "peak_memory_mb": round(measured["peak_memory_mb"]), "weights_memory_mb": measured["weights_memory_mb"],
              "final_loss": round(losses[-1], 3), "trainable_parameters": trainable, "total_parameters": total}
    if args.eval_n:
        trainer.model.eval()
        held_out = load_records(args.data, n=args.eval_n, split="test")
        summary = evaluate(trainer.model, trainer.processing_class, held_out, style="think", progress=False,
                           sampling=SamplingConfig(max_new_tokens=args.max_new_tokens, batch_size=args.eval_n)).summary
        result["accuracy"], result["accuracy_stderr"] = summary["accuracy"], round(summary["accuracy_stderr"], 3)
    if torch.cuda.is_available():
        # Model FLOPs utilisation: 6 x parameters x tokens/s over the GPU's dense bf16 peak.
        result["mfu"] = round(6 * total * measured["tokens_per_second"] / (args.peak_tflops * 1e12), 4)
    return result


def main() -> None:
    parser = bench_parser(steps=8)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--config", choices=["cotlab", "cotlab-padded", "cotlab-qlora", "trl-default"])
    parser.add_argument("--qlora", action="store_true", help="also run cotlab's recipe on a 4-bit NF4 base")
    parser.add_argument("--dtype", default="auto", help="cotlab's training precision: auto, float32 or bfloat16")
    parser.add_argument("--repeats", type=int, default=3, help="runs per configuration, alternating configurations")
    parser.add_argument("--eval-n", type=int, default=50, help="held-out questions answered after training (0: skip)")
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--peak-tflops", type=float, default=989.0, help="dense bf16 peak of the GPU (H100/H200 SXM: 989)")
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args)))
        return
    load_before = load_average()
    common = forward(args, ["model", "data", "steps", "batch", "peak_tflops", "max_new_tokens", "dtype"])
    import torch

    # On a GPU cotlab batches padding-free; "cotlab-padded" is the same recipe with padding, for the ratio.
    configs = ("trl-default", "cotlab", *(("cotlab-padded",) if torch.cuda.is_available() else ()), *(("cotlab-qlora",) if args.qlora else ()))
    runs = {config: [] for config in configs}
    for repeat in range(args.repeats):  # alternate, so a busy spell on a shared machine hits every configuration
        for config in configs:
            runs[config].append(run_child(__file__, [*common, "--eval-n", str(args.eval_n if repeat == 0 else 0), "--config", config]))
    rows = []
    for config, results in runs.items():
        speeds = [r["tokens_per_second"] for r in results]
        rows.append({**results[0], "tokens_per_second": round(statistics.median(speeds), 1),
                     "tokens_per_second_range": [min(speeds), max(speeds)], "runs": len(speeds)})
    peaks = None
    if not torch.cuda.is_available():  # CPU: the fraction of this machine's measured matrix-product peak (6 x parameters x tokens/s)
        from transformers import AutoConfig

        from cotlab.models import resolve_model

        shape = AutoConfig.from_pretrained(resolve_model(args.model))
        peaks = matmul_peaks(shape.hidden_size, shape.intermediate_size, args.batch * 128)
        for row in rows:
            peak = peaks["gflops"].get("bfloat16" if "bf16" in str(row["precision"]) else "float32")
            row["peak_fraction"] = round(6 * row["total_parameters"] * row["tokens_per_second"] / 1e9 / peak, 3)
    for row in rows:
        row["speedup_vs_trl_default"] = round(row["tokens_per_second"] / rows[0]["tokens_per_second"], 2)
        row["memory_vs_trl_default"] = round(row["peak_memory_mb"] / rows[0]["peak_memory_mb"], 2)
    print_table(rows, ["config", "precision", "steps", "tokens", "seconds", "tokens_per_second", "tokens_per_second_range", "peak_memory_mb", "weights_memory_mb", "final_loss",
                       "accuracy", "trainable_parameters", "speedup_vs_trl_default", "memory_vs_trl_default", "mfu", "peak_fraction"])
    path = write_result("sft", {"model": args.model, "steps": args.steps, "batch": args.batch, "eval_n": args.eval_n, "repeats": args.repeats,
                                "ratio_vs_trl_default": rows[1]["speedup_vs_trl_default"], "matmul_peaks": peaks,
                                "load_average": {"before": load_before, "after": load_average()}, "rows": rows}, args.out)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
