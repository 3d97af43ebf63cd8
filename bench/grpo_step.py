"""GRPO step time and its split between generation, scoring and training.

    python bench/grpo_step.py [--model embedded] [--steps 3] [--use-vllm] [--out FILE]

Times TRL's own phases inside one GRPOTrainer run: `_generate` (sampling the groups),
`_generate_and_score_completions` minus that (rewards, log-probs), and the rest of each step
(forward, backward, optimiser).
"""

from __future__ import annotations

import functools
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import bench_parser, forward, print_table, run_child, write_result  # noqa: E402


def _timed(fn, bucket: list):
    @functools.wraps(fn)
    def wrapper(*a, **k):
        start = time.perf_counter()
        try:
            return fn(*a, **k)
        finally:
            bucket.append(time.perf_counter() - start)

    return wrapper


def child(args) -> dict:
    from cotlab.recipes import GRPORecipe
    from cotlab.training import build_grpo_trainer

    with tempfile.TemporaryDirectory() as out:
        recipe = GRPORecipe(model=args.model, guards="warn", dataset=args.data, n_prompts=64, output_dir=out, max_steps=args.steps,
                            num_generations=args.num_generations, per_device_train_batch_size=args.batch,
                            max_completion_length=args.max_completion_length, use_vllm=args.use_vllm, save_steps=10**6)
        trainer, info = build_grpo_trainer(recipe)
        generation, scoring = [], []
        trainer._generate = _timed(trainer._generate, generation)
        trainer._generate_and_score_completions = _timed(trainer._generate_and_score_completions, scoring)
        start = time.perf_counter()
        trainer.train()
        wall = time.perf_counter() - start
    steps = trainer.state.global_step
    gen, score = sum(generation), sum(scoring) - sum(generation)
    clipped = [e["completions/clipped_ratio"] for e in trainer.state.log_history if "completions/clipped_ratio" in e]
    return {"config": "vllm" if info["use_vllm"] else "hf generate", "steps": steps, "step_seconds": round(wall / steps, 2),
            "generation_share": round(gen / wall, 3), "scoring_share": round(score / wall, 3),
            "training_share": round((wall - gen - score) / wall, 3), "clipped_ratio": round(sum(clipped) / max(1, len(clipped)), 2)}


def main() -> None:
    parser = bench_parser(steps=3)
    parser.add_argument("--num-generations", type=int, default=4)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--max-completion-length", type=int, default=64)
    parser.add_argument("--use-vllm", action="store_true", help="also time the same steps with vLLM colocated (GPU)")
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args)))
        return
    common = forward(args, ["model", "data", "steps", "num_generations", "batch", "max_completion_length"])
    rows = [run_child(__file__, common)]
    if args.use_vllm:
        rows.append(run_child(__file__, [*common, "--use-vllm"]))
        rows[-1]["speedup_vs_hf"] = round(rows[0]["step_seconds"] / rows[-1]["step_seconds"], 2)
    print_table(rows, ["config", "steps", "step_seconds", "generation_share", "scoring_share", "training_share", "clipped_ratio",
                       "speedup_vs_hf"])
    path = write_result("grpo_step", {"model": args.model, "rows": rows}, args.out)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
