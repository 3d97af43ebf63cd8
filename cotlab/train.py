"""Training stages on TRL: SFT (LoRA, QLoRA or full), DPO and GRPO.

Each stage is one function taking a small recipe dataclass; the notebooks, `cotlab train
STAGE --config recipe.yaml` and `accelerate launch -m cotlab.train STAGE --config recipe.yaml`
all call the same function, so a recipe that ran on a laptop runs unchanged under DDP,
DeepSpeed ZeRO or FSDP (configs/accelerate/).

What TRL already does we leave to TRL: completion-only loss for prompt/completion data,
packing, PEFT wrapping (and the DPO reference model as the adapter-disabled base), GRPO's
group-relative advantages.  What we add: sensible CPU/GPU precision, throughput and peak
memory, resume from the last checkpoint, and a model card beside the adapter.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import resource
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from cotlab import CotlabError
from cotlab.io import atomic_write_json, atomic_write_text


@dataclass
class SFTRecipe:
    model: str = "embedded"  # embedded, tiny-random, a folder or a hub id
    dataset: str = ""  # a datasets folder (save_to_disk) or a JSONL file of prompt/completion rows
    output_dir: str = "outputs/sft"
    lora_r: int = 16  # 0 means full fine-tuning
    lora_alpha: int = 32
    lora_dropout: float = 0.0
    target_modules: list[str] | str = "all-linear"
    load_in_4bit: bool = False  # QLoRA (GPU only)
    learning_rate: float = 1e-3
    num_train_epochs: float = 1.0
    max_steps: int = -1
    per_device_train_batch_size: int = 8
    gradient_accumulation_steps: int = 1
    max_length: int = 512
    packing: bool = False
    padding_free: bool = False
    gradient_checkpointing: bool = False
    lr_scheduler_type: str = "cosine"
    warmup_steps: float = 0.05  # < 1 is a fraction of all steps (transformers 5 folded warmup_ratio into this)
    logging_steps: int = 5
    save_steps: int = 50
    save_total_limit: int = 2
    seed: int = 0
    merge: bool = False  # also write the adapter merged into a full checkpoint
    report_to: str = "none"  # tensorboard, trackio, wandb...


def precision_kwargs() -> dict:
    """TRL defaults to bf16; on CPU that is slow and lossy, so choose explicitly."""
    if torch.cuda.is_available():
        return {"bf16": torch.cuda.is_bf16_supported(), "fp16": not torch.cuda.is_bf16_supported()}
    return {"bf16": False, "fp16": False, "use_cpu": True}


def lora_config(r: int, alpha: int, dropout: float, target_modules):
    from peft import LoraConfig

    return LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=target_modules, task_type="CAUSAL_LM")


def load_training_dataset(source):
    """A datasets.Dataset from a folder saved with save_to_disk, a JSONL file, or a list of rows."""
    import datasets

    if isinstance(source, datasets.Dataset):
        return source
    if isinstance(source, list):
        if not source:
            raise CotlabError("the training dataset is empty")
        return datasets.Dataset.from_list(source)
    path = Path(str(source))
    if path.is_dir():
        return datasets.load_from_disk(str(path))
    if path.is_file():
        from cotlab.io import read_jsonl

        rows = read_jsonl(path)
        if not rows:
            raise CotlabError(f"{path} holds no rows")
        return datasets.Dataset.from_list(rows)
    raise CotlabError(f"training dataset not found: {source}")


def _base_model(name: str, load_in_4bit: bool = False):
    """Load the model for training in the right dtype (a model passed by name to TRL loads in fp32)."""
    from transformers import AutoModelForCausalLM

    from cotlab.models import default_dtype, quantization_config, resolve_model

    kwargs = {"dtype": default_dtype()}
    if load_in_4bit:
        kwargs["quantization_config"] = quantization_config(default_dtype())
    return AutoModelForCausalLM.from_pretrained(resolve_model(name), **kwargs)


def last_checkpoint(output_dir: str | Path) -> str | None:
    from transformers.trainer_utils import get_last_checkpoint

    return get_last_checkpoint(str(output_dir)) if Path(output_dir).is_dir() else None


def peak_memory_mb() -> float:
    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def _throughput(trainer, wall: float) -> dict:
    tokens = 0
    for entry in trainer.state.log_history:
        tokens = max(tokens, int(entry.get("num_tokens", 0)))
    return {"train_tokens": tokens, "tokens_per_second": round(tokens / wall, 1) if wall else 0.0}


def _finish(trainer, recipe, stage: str, wall: float, extra: dict | None = None) -> dict:
    """Save the adapter (or full model), a model card and metrics; return the metrics."""
    out = Path(recipe.output_dir)
    final = out / "final"
    trainer.save_model(str(final))
    trainer.processing_class.save_pretrained(str(final))
    metrics = {
        "stage": stage,
        "model": recipe.model,
        "output": str(final),
        "wall_seconds": round(wall, 1),
        "steps": trainer.state.global_step,
        "peak_memory_mb": round(peak_memory_mb(), 1),
        **_throughput(trainer, wall),
        "log_history": trainer.state.log_history,
        "recipe": dataclasses.asdict(recipe),
        **(extra or {}),
    }
    # The last logged loss, or the run's mean loss when it was shorter than logging_steps.
    losses = [e.get("loss", e.get("train_loss")) for e in trainer.state.log_history if "loss" in e or "train_loss" in e]
    metrics["final_loss"] = losses[-1] if losses else float("nan")
    if getattr(recipe, "merge", False) and hasattr(trainer.model, "merge_and_unload"):
        merged = trainer.model.merge_and_unload()
        merged.save_pretrained(str(out / "merged"))
        trainer.processing_class.save_pretrained(str(out / "merged"))
        metrics["merged"] = str(out / "merged")
    atomic_write_json(out / "metrics.json", metrics)
    atomic_write_text(final / "README.md", model_card(stage, recipe, metrics))
    return metrics


def model_card(stage: str, recipe, metrics: dict) -> str:
    fields = "\n".join(f"| {k} | {v} |" for k, v in dataclasses.asdict(recipe).items())
    return (
        f"# cotlab {stage.upper()} output\n\n"
        f"Base model: `{recipe.model}`. Trained with cotlab ({stage}, TRL) for {metrics['steps']} steps "
        f"in {metrics['wall_seconds']} s; {metrics['tokens_per_second']} tokens/s; "
        f"peak memory {metrics['peak_memory_mb']} MB; final loss {metrics.get('final_loss')}.\n\n"
        f"Prompt format: the think format of `cotlab.prompts` (`<think>…</think>` then `<answer>…</answer>`).\n\n"
        f"| recipe field | value |\n|---|---|\n{fields}\n"
    )


def train_sft(recipe: SFTRecipe, dataset=None, eval_dataset=None) -> dict:
    """Supervised fine-tuning on prompt/completion (or messages) rows; loss on the completion only.

    Resumes from the last checkpoint in recipe.output_dir when there is one.
    """
    from trl import SFTConfig, SFTTrainer

    from cotlab.models import load_tokenizer

    train_rows = load_training_dataset(dataset if dataset is not None else recipe.dataset)
    tokenizer = load_tokenizer(recipe.model)
    config = SFTConfig(
        output_dir=recipe.output_dir,
        learning_rate=recipe.learning_rate,
        num_train_epochs=recipe.num_train_epochs,
        max_steps=recipe.max_steps,
        per_device_train_batch_size=recipe.per_device_train_batch_size,
        gradient_accumulation_steps=recipe.gradient_accumulation_steps,
        max_length=recipe.max_length,
        packing=recipe.packing,
        padding_free=recipe.padding_free,
        completion_only_loss=None,  # TRL: completion-only for prompt/completion rows, full text otherwise
        gradient_checkpointing=recipe.gradient_checkpointing,
        lr_scheduler_type=recipe.lr_scheduler_type,
        warmup_steps=recipe.warmup_steps,
        logging_steps=recipe.logging_steps,
        save_steps=recipe.save_steps,
        save_total_limit=recipe.save_total_limit,
        seed=recipe.seed,
        report_to=recipe.report_to,
        dataloader_num_workers=0,
        disable_tqdm=True,
        **precision_kwargs(),
    )
    peft_config = lora_config(recipe.lora_r, recipe.lora_alpha, recipe.lora_dropout, recipe.target_modules) if recipe.lora_r > 0 else None
    trainer = SFTTrainer(
        model=_base_model(recipe.model, recipe.load_in_4bit),
        args=config,
        train_dataset=train_rows,
        eval_dataset=eval_dataset,
        processing_class=tokenizer,
        peft_config=peft_config,
    )
    start = time.perf_counter()
    trainer.train(resume_from_checkpoint=last_checkpoint(recipe.output_dir))
    return _finish(trainer, recipe, "sft", time.perf_counter() - start, {"train_rows": len(train_rows)})


# Recipes on the command line ---------------------------------------------------------------------

RECIPES = {"sft": (SFTRecipe, "train_sft")}


def load_recipe(stage: str, config: str | None, overrides: list[str] | None = None):
    """A recipe dataclass from a YAML file plus key=value overrides; unknown keys are errors."""
    import yaml

    recipe_type, _ = RECIPES[stage]
    values = {}
    if config:
        path = Path(config)
        if not path.is_file():
            raise CotlabError(f"recipe file not found: {config}")
        values = yaml.safe_load(path.read_text()) or {}
    for pair in overrides or []:
        key, eq, value = pair.partition("=")
        if not eq:
            raise CotlabError(f"bad override '{pair}': expected key=value")
        values[key] = yaml.safe_load(value)
    known = {f.name for f in dataclasses.fields(recipe_type)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise CotlabError(f"unknown {stage} recipe field(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    return recipe_type(**values)


def run_stage(stage: str, config: str | None, overrides: list[str] | None = None) -> dict:
    recipe = load_recipe(stage, config, overrides)
    metrics = globals()[RECIPES[stage][1]](recipe)
    print(json.dumps({k: v for k, v in metrics.items() if k not in ("log_history", "recipe")}, indent=2))
    return metrics


def add_cli(subparsers) -> None:
    parser = subparsers.add_parser("train", help="train a stage (sft, dpo, grpo) from a YAML recipe")
    parser.add_argument("stage", choices=sorted(RECIPES))
    parser.add_argument("--config", help="recipe YAML (configs/recipes/)")
    parser.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a recipe field")
    parser.set_defaults(func=lambda args: (run_stage(args.stage, args.config, args.set), 0)[1])


def main(argv: list[str] | None = None) -> int:
    """`python -m cotlab.train STAGE --config recipe.yaml`: the entry point for `accelerate launch`."""
    parser = argparse.ArgumentParser(prog="cotlab.train")
    parser.add_argument("stage", choices=sorted(RECIPES))
    parser.add_argument("--config")
    parser.add_argument("--set", action="append", metavar="KEY=VALUE")
    args = parser.parse_args(argv)
    try:
        run_stage(args.stage, args.config, args.set)
    except CotlabError as e:
        print(f"cotlab: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
