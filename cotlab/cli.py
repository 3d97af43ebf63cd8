"""The `cotlab` command: one subcommand per stage, each a thin wrapper over a package function.

All argument parsing lives here.  `python -m cotlab.train STAGE …` (what `accelerate launch` and
`torchrun` run) is `cotlab train STAGE …` through this same `main`.  Nothing heavy is imported
at module level, so `cotlab --help` answers without loading torch.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from cotlab import CotlabError, __version__

STAGE_NAMES = ("sft", "dpo", "grpo")  # the run's pipeline stages (cotlab export)
TRAIN_STAGES = (*STAGE_NAMES, "onpolicy")  # cotlab train: also on-policy distillation (lesson 11)


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got '{text}'") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def add_sampling_arguments(parser: argparse.ArgumentParser, k: int = 1, temperature: float = 0.0) -> None:
    parser.add_argument("--k", type=positive_int, default=k, help="samples per question (k > 1 needs --temperature > 0)")
    parser.add_argument("--temperature", type=float, default=temperature, help="0 = greedy")
    parser.add_argument("--top-p", type=float, default=1.0)
    parser.add_argument("--max-new-tokens", type=positive_int, default=256)
    parser.add_argument("--batch-size", type=positive_int, default=16, help="sequences per forward pass")
    parser.add_argument("--seed", type=int, default=0)


def add_backend_argument(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument("--backend", choices=["auto", "hf", "vllm"], default="auto",
                        help=f"what generates {what}: hf (cotlab's batched decoder), vllm (GPU, vLLM installed), "
                             "auto (vllm when it can run, else hf)")


def sampling_from(args):
    from cotlab.generate import SamplingConfig

    return SamplingConfig(max_new_tokens=args.max_new_tokens, temperature=args.temperature, top_p=args.top_p,
                          k=args.k, batch_size=args.batch_size, seed=args.seed)


# Commands -----------------------------------------------------------------------------------------


def cmd_eval(args) -> int:
    from cotlab.data import load_records, split_label
    from cotlab.evaluate import evaluate_to
    from cotlab.prompts import check_style, exemplars_from

    check_style(args.style)
    out = Path(args.out or f"runs/eval-{Path(args.model).name}-{args.data.replace(':', '_').replace('/', '_')[:40]}")
    if (out / "summary.json").exists():
        raise CotlabError(f"{out} already holds an evaluation (summary.json): choose another --out")
    records = load_records(args.data, n=args.n, split=args.split, seed=args.seed)
    split = split_label(args.data, args.split)
    # A split used whole has no train side to draw exemplars from: the prompts' defaults serve.
    exemplars = None
    if args.style == "few_shot_cot" and split.startswith("hash:"):
        exemplars = exemplars_from(load_records(args.data, n=3, split="train", seed=args.seed))
    result = evaluate_to(out, records, model=args.model, adapter=args.adapter, style=args.style, sampling=sampling_from(args),
                         exemplars=exemplars, backend=args.backend, data=args.data, split=split, seed=args.seed)
    s = result.summary
    low, high = s["interval"]
    print(f"accuracy {s['accuracy']:.3f} (Wilson 95% {low:.3f}–{high:.3f}; lenient {s['accuracy_lenient']:.3f}) "
          f"on {s['n']} questions ({split}); mean completion {s['mean_completion_tokens']:.1f} tokens; "
          f"{s['tokens_per_second']} tokens/s with the {s['backend']} backend")
    print(f"wrote {out}/predictions.jsonl and {out}/summary.json")
    return 0


def cmd_run(args) -> int:
    from cotlab.runs import parse_overrides, resume_run, start_run

    if args.sweep:
        from cotlab.sweeps import parse_sweep, start_sweep

        if args.resume:
            raise CotlabError("--sweep and --resume do not go together: resume each point's run directory")
        sweep_dir, run_dirs = start_sweep(args.profile, parse_sweep(args.sweep), out=args.out, only=args.only,
                                          overrides=parse_overrides(args.param))
        print(f"sweep directory: {sweep_dir}  ({len(run_dirs)} runs; report/report.html compares them)")
        return 0
    if args.resume:
        run_dir, summary = resume_run(args.resume)
    else:
        run_dir, summary = start_run(args.profile, out=args.out, only=args.only, overrides=parse_overrides(args.param))
    print(f"accuracy by stage: {json.dumps(summary['accuracy'])}")
    print(f"run directory: {run_dir}  (summary.json, executed notebooks, figures)")
    return 0


def cmd_report(args) -> int:
    import datetime as dt

    from cotlab.report import build_report

    out = args.out or f"reports/{dt.datetime.now():%Y%m%d-%H%M%S}"
    path = build_report(args.runs, out)
    print(f"wrote {path} and {path.with_suffix('.md')}")
    return 0


def cmd_tasks(args) -> int:
    from cotlab.data import reasoning_gym_tasks

    print("\n".join(reasoning_gym_tasks()))
    return 0


def cmd_train(args) -> int:
    from cotlab.recipes import load_recipe, recipe_fields

    if args.list_fields:
        print("\n".join(recipe_fields(args.stage)))
        return 0
    from cotlab.training import run_stage

    run_stage(args.stage, load_recipe(args.stage, args.config, args.set))
    return 0


def cmd_distill(args) -> int:
    from cotlab.data import load_records, training_split
    from cotlab.distill import distill_to
    from cotlab.teachers import teacher_from

    records = load_records(args.data, n=args.n, split=training_split(args.data), seed=args.seed)
    teacher = teacher_from(args.teacher, args.teacher_url, args.api_key, args.concurrency, backend=args.backend)
    card = distill_to(args.out, records, teacher, sampling_from(args), args.name, args.max_per_question,
                      args.chunk_size, use_star=args.star)
    stats = getattr(teacher, "stats", None)
    if stats is not None and stats.seconds:
        print(f"generated {stats.tokens} tokens in {stats.seconds:.1f}s ({stats.tokens_per_second:.1f} tokens/s) "
              f"with the {teacher.backend} backend")
    out = Path(args.out) / args.name
    print(json.dumps({k: v for k, v in card.items() if k != "rationale_words"}))
    print(f"wrote {out} (datasets), {out}.jsonl and {out}.card.json")
    return 0



def cmd_score(args) -> int:
    from cotlab.score import score

    s = score(args.data, args.completions, args.out, split=args.split, n=args.n, seed=args.seed).summary
    low, high = s["interval"]
    print(f"accuracy {s['accuracy']:.3f} (95% interval {low:.3f}-{high:.3f}; lenient {s['accuracy_lenient']:.3f}) "
          f"on {s['n']} completions")
    print(f"wrote {args.out}/predictions.jsonl and {args.out}/summary.json")
    return 0


def cmd_decontaminate(args) -> int:
    from cotlab.decontaminate import contaminated, load_texts
    from cotlab.io import write_jsonl

    train_split = args.train_split or ("train" if args.train.startswith("rg:") else None)
    train_texts, train_rows = load_texts(args.train, split=train_split, n=args.train_n)
    eval_texts, _ = load_texts(args.eval, split=args.eval_split, n=args.eval_n)
    hits = set(contaminated(train_texts, eval_texts, n=args.n))
    print(f"{len(hits)} of {len(train_texts)} training rows share a {args.n}-word n-gram with the "
          f"{len(eval_texts)} evaluation questions")
    if args.drop:
        if train_rows is None:
            raise CotlabError("--drop writes a cleaned copy of a training JSONL file: TRAIN must be a file")
        write_jsonl(args.drop, [row for i, row in enumerate(train_rows) if i not in hits])
        print(f"wrote {len(train_rows) - len(hits)} clean rows to {args.drop}")
    return 0


def cmd_export(args) -> int:
    from cotlab.export import export_merged
    from cotlab.layout import stage_adapter

    adapter = stage_adapter(args.run_dir, args.stage)
    out = export_merged(adapter, args.merge, dtype=args.dtype, push_to_hub=args.push_to_hub)
    print(f"wrote {out}: base + {args.stage} adapter chain merged; loads with AutoModelForCausalLM.from_pretrained")
    if args.push_to_hub:
        print(f"pushed to the hub as {args.push_to_hub}")
    return 0


def add_export_command(sub) -> None:
    p = sub.add_parser("export", help="merge a run's stage (base + its adapter chain) into a plain HF model")
    p.add_argument("run_dir", metavar="RUN_DIR")
    p.add_argument("--stage", choices=STAGE_NAMES, required=True)
    p.add_argument("--merge", required=True, metavar="OUT", help="folder for the merged model (new or empty)")
    p.add_argument("--dtype", choices=["float32", "bfloat16"],
                   help="default: the stage's training dtype (no float16: cotlab loads weights in float32 or bfloat16 only)")
    p.add_argument("--push-to-hub", metavar="REPO", help="also upload to this hub repo (needs a network and a token)")
    p.set_defaults(func=cmd_export)


# The parser ---------------------------------------------------------------------------------------


def add_benchmark_commands(sub) -> None:
    p = sub.add_parser("score", help="grade completions made elsewhere (vLLM, an API): predictions.jsonl + summary.json")
    p.add_argument("--data", required=True, help="rg:TASK, a JSONL file, or hf:DATASET[:CONFIG][:SPLIT]")
    p.add_argument("--completions", required=True, help="JSONL rows with 'completion' and 'id' or 'question'")
    p.add_argument("--out", required=True, help="output folder (must not hold an earlier evaluation)")
    p.add_argument("--split", choices=["train", "test", "all"], help="as for cotlab eval")
    p.add_argument("--n", type=positive_int, help="records to load from a reasoning-gym task (default 200)")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_score)

    p = sub.add_parser("decontaminate", help="find (and drop) training rows sharing a word n-gram with an eval set")
    p.add_argument("train", metavar="TRAIN", help="training JSONL (question/problem or TRL prompt rows) or a task spec")
    p.add_argument("eval", metavar="EVAL", help="evaluation JSONL or task spec")
    p.add_argument("--n", type=positive_int, default=8, help="n-gram length in words")
    p.add_argument("--drop", metavar="OUT", help="write the training rows without the contaminated ones")
    p.add_argument("--train-split", choices=["train", "test", "all"], help="for a task spec TRAIN (default: train side)")
    p.add_argument("--eval-split", choices=["train", "test", "all"], help="for a task spec EVAL (default as eval)")
    p.add_argument("--train-n", type=positive_int, help="records from a task spec TRAIN")
    p.add_argument("--eval-n", type=positive_int, help="records from a task spec EVAL")
    p.set_defaults(func=cmd_decontaminate)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cotlab", description="Chain-of-thought fine-tuning, lesson by lesson.")
    parser.add_argument("--version", action="version", version=f"cotlab {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("eval", help="evaluate a model on a task: predictions.jsonl + summary.json")
    p.add_argument("--model", default="embedded", help="embedded, tiny-random, a local folder or a hub id")
    p.add_argument("--adapter", help="a PEFT adapter folder to apply")
    p.add_argument("--data", required=True, help="rg:TASK, a GSM8K-format JSONL file, or hf:DATASET[:CONFIG][:SPLIT]")
    p.add_argument("--n", type=positive_int, default=50, help="number of questions")
    p.add_argument("--split", choices=["train", "test", "all"],
                   help="default: a file or hub split whole, a reasoning-gym task's hashed test side")
    p.add_argument("--style", default="think", help="direct, zero_shot_cot, few_shot_cot or think")
    p.add_argument("--out", help="output folder (must not hold an earlier evaluation)")
    add_sampling_arguments(p)
    add_backend_argument(p, "the completions")
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("run", help="execute the numbered notebooks with papermill into a fresh run directory")
    p.add_argument("--profile", default="cpu", help="smoke, cpu or gpu (configs/profiles/)")
    p.add_argument("--out", help="run directory: new or empty, or an unfinished run of the same profile and parameters to continue; default runs/<time>-<profile>")
    p.add_argument("--only", nargs="+", metavar="NB", help="notebooks to run, by number or name prefix")
    p.add_argument("-p", "--param", action="append", metavar="KEY=VALUE", help="override a notebook parameter")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue an interrupted run, skipping finished notebooks")
    p.add_argument("--sweep", action="append", metavar="KEY=V1,V2",
                   help="run once per value (repeat for a grid) into sibling run directories, then report")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("report", help="compare run directories: report.md, report.html and figures")
    p.add_argument("runs", nargs="+", metavar="RUN_DIR")
    p.add_argument("--out", help="report folder (new or empty); default reports/<time>")
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("tasks", help="list the reasoning-gym task names usable as rg:NAME")
    p.set_defaults(func=cmd_tasks)
    add_benchmark_commands(sub)
    add_export_command(sub)

    p = sub.add_parser("train", help="train a stage (sft, dpo, grpo, onpolicy) from a YAML recipe (TRL's config fields plus cotlab's)")
    p.add_argument("stage", choices=TRAIN_STAGES)
    p.add_argument("--config", help="recipe YAML (configs/recipes/)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a recipe field (any TRL config field)")
    p.add_argument("--list-fields", action="store_true", help="print every field the stage's recipe accepts")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("distill", help="build a verified CoT training set (gold, rejection sampling, STaR)")
    p.add_argument("--data", required=True, help="task spec; questions come from its train split")
    p.add_argument("--teacher", default="embedded", help="gold, embedded, a folder or hub id, or a model name with --teacher-url")
    p.add_argument("--teacher-url", help="an OpenAI-compatible base URL, e.g. http://127.0.0.1:8000/v1")
    p.add_argument("--api-key")
    p.add_argument("--concurrency", type=positive_int, default=4, help="HTTP requests in flight")
    p.add_argument("--n", type=positive_int, default=100)
    p.add_argument("--chunk-size", type=positive_int, default=16, help="questions per written chunk")
    p.add_argument("--max-per-question", type=positive_int, default=4)
    p.add_argument("--star", action="store_true", help="rationalise failed questions with the answer as a hint")
    p.add_argument("--name", default="distilled")
    p.add_argument("--out", required=True, help="output folder; rerunning with the same parameters resumes")
    add_sampling_arguments(p, k=4, temperature=0.7)
    add_backend_argument(p, "a local teacher's samples")
    p.set_defaults(func=cmd_distill)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except CotlabError as e:
        print(f"cotlab: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("cotlab: interrupted; finished results are kept (cotlab run --resume continues a run)", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
