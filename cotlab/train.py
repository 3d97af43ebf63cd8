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
    load_in_4bit: bool = False  # QLoRA: LoRA on an NF4-quantised base (bitsandbytes)
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
    report_to: str = "none"  # none, auto (TensorBoard, plus trackio when installed), tensorboard, trackio, wandb...


def resolve_report_to(value: str) -> str | list[str]:
    """'auto' = TensorBoard (logs under output_dir/runs), plus trackio when it is installed."""
    if value != "auto":
        return value
    import importlib.util

    return [name for name in ("tensorboard", "trackio") if importlib.util.find_spec(name)] or "none"


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


def _base_model(name: str, load_in_4bit: bool = False, merge: list[str] | None = None):
    """Load the model for training in the right dtype (a model passed by name to TRL loads in
    fp32), with earlier stages' adapters merged in: a DPO or GRPO LoRA then trains on top of the
    SFT model, and its reference model (the adapter switched off) is that SFT model, not the base."""
    from transformers import AutoModelForCausalLM

    from cotlab.models import default_dtype, merge_adapters, quantization_config, quantized_device_map, resolve_model

    kwargs = {"dtype": default_dtype()}
    if load_in_4bit:
        kwargs.update(quantization_config=quantization_config(default_dtype()), device_map=quantized_device_map())
    model = AutoModelForCausalLM.from_pretrained(resolve_model(name), **kwargs)
    return merge_adapters(model, merge or [])


def _adapter_chain(adapter: str | None) -> list[str]:
    from cotlab.models import base_adapters

    return [*base_adapters(adapter), str(adapter)] if adapter else []


def _run_trainer(trainer, recipe, stage: str, extra: dict | None = None) -> dict:
    """Train, resuming from the last complete checkpoint, then save and return the metrics; a GPU
    out-of-memory error becomes one line naming the knobs that fix it."""
    try:
        measured = measure_training(trainer, resume_from_checkpoint=last_checkpoint(recipe.output_dir))
    except torch.cuda.OutOfMemoryError:
        knobs = [f"per_device_train_batch_size (now {recipe.per_device_train_batch_size}; raise gradient_accumulation_steps to keep the batch)"]
        if hasattr(recipe, "gradient_checkpointing") and not recipe.gradient_checkpointing:
            knobs.append("gradient_checkpointing: true")
        if hasattr(recipe, "load_in_4bit") and not recipe.load_in_4bit:
            knobs.append("load_in_4bit: true (QLoRA)")
        for length in ("max_length", "max_completion_length", "num_generations"):
            if hasattr(recipe, length):
                knobs.append(f"{length} (now {getattr(recipe, length)})")
        raise CotlabError("GPU out of memory while training; lower " + ", or ".join(knobs)) from None
    return _finish(trainer, recipe, stage, measured, extra)


def measure_training(trainer, resume_from_checkpoint: str | None = None) -> dict:
    """Run trainer.train() and measure it: wall time, this run's peak memory, the weights' own
    memory (4-bit under QLoRA: what QLoRA saves, apart from activations and optimiser state),
    tokens trained and tokens/s.  The stages and bench/ both measure through here."""
    reset_peak_memory()
    start = time.perf_counter()
    trainer.train(resume_from_checkpoint=resume_from_checkpoint)
    wall = time.perf_counter() - start
    return {"wall_seconds": round(wall, 1), "peak_memory_mb": round(peak_memory_mb(), 1),
            "weights_memory_mb": round(trainer.model.get_memory_footprint() / 2**20, 2), **_throughput(trainer, wall)}


def last_checkpoint(output_dir: str | Path) -> str | None:
    """The newest complete checkpoint: the Trainer writes trainer_state.json last, so a folder
    without it was cut off mid-save by a kill and is skipped."""
    folder = Path(output_dir)
    complete = [p for p in folder.glob("checkpoint-*") if p.name.split("-")[-1].isdigit() and (p / "trainer_state.json").is_file()]
    return str(max(complete, key=lambda p: int(p.name.split("-")[-1]))) if complete else None


def reset_peak_memory() -> None:
    """Start a fresh peak, so a run's figure is its own and not the largest of everything this
    process (a notebook kernel) ran before it."""
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
        return
    try:
        Path("/proc/self/clear_refs").write_text("5")  # Linux: resets the peak RSS (VmHWM)
    except OSError:
        pass  # elsewhere the peak stays the process's lifetime maximum


def peak_memory_mb() -> float:
    """Peak GPU memory allocated by torch, or on CPU the peak resident set size."""
    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**20
    status = Path("/proc/self/status")
    if status.is_file():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024  # kB
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def _throughput(trainer, wall: float) -> dict:
    tokens = 0
    for entry in trainer.state.log_history:
        tokens = max(tokens, int(entry.get("num_tokens", 0)))
    return {"train_tokens": tokens, "tokens_per_second": round(tokens / wall, 1) if wall else 0.0}


def _finish(trainer, recipe, stage: str, measured: dict, extra: dict | None = None) -> dict:
    """Save the adapter (or full model), a model card and metrics; return the metrics."""
    from cotlab.models import BASE_ADAPTERS_FILE

    out = Path(recipe.output_dir)
    final = out / "final"
    trainer.save_model(str(final))
    trainer.processing_class.save_pretrained(str(final))
    chain = _adapter_chain(getattr(recipe, "adapter", None))
    if chain:
        atomic_write_json(final / BASE_ADAPTERS_FILE, {"merged_adapters": chain})
    metrics = {
        "stage": stage,
        "model": recipe.model,
        "output": str(final),
        "steps": trainer.state.global_step,
        **measured,
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
    trainer = build_sft_trainer(recipe, dataset, eval_dataset)
    return _run_trainer(trainer, recipe, "sft", {"train_rows": len(trainer.train_dataset)})


def build_sft_trainer(recipe: SFTRecipe, dataset=None, eval_dataset=None):
    """TRL's SFTTrainer set up from a recipe (what train_sft runs; bench/ times it directly)."""
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
        # transformers 5 renamed gradient_checkpointing (TRL's configs default it to True); the recipes keep
        # the familiar name and set the new one, so the choice is explicit and no deprecation warning shows.
        activation_checkpointing=recipe.gradient_checkpointing,
        lr_scheduler_type=recipe.lr_scheduler_type,
        warmup_steps=recipe.warmup_steps,
        logging_steps=recipe.logging_steps,
        save_steps=recipe.save_steps,
        save_total_limit=recipe.save_total_limit,
        seed=recipe.seed,
        report_to=resolve_report_to(recipe.report_to),
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
    return trainer


# Preference and RL stages ---------------------------------------------------------------------


@dataclass
class _LoRAStageRecipe:
    """What DPO and GRPO share: a LoRA on top of the model (and any earlier adapter, merged)."""

    model: str = "embedded"
    adapter: str | None = None  # start from this (SFT) adapter, merged into the weights
    dataset: str = ""  # a datasets folder or JSONL file
    output_dir: str = "outputs/stage"
    lora_r: int = 16
    lora_alpha: int = 32
    learning_rate: float = 5e-5
    max_steps: int = -1
    per_device_train_batch_size: int = 4
    gradient_accumulation_steps: int = 1
    logging_steps: int = 1
    save_steps: int = 50
    save_total_limit: int = 2
    seed: int = 0
    report_to: str = "none"


def _shared_args(recipe: _LoRAStageRecipe) -> dict:
    names = ("output_dir", "learning_rate", "max_steps", "per_device_train_batch_size", "gradient_accumulation_steps",
             "logging_steps", "save_steps", "save_total_limit", "seed")
    return {**{name: getattr(recipe, name) for name in names}, "report_to": resolve_report_to(recipe.report_to),
            "disable_tqdm": True, **precision_kwargs()}


@dataclass
class DPORecipe(_LoRAStageRecipe):
    output_dir: str = "outputs/dpo"
    beta: float = 0.1
    loss_type: str = "sigmoid"  # sigmoid (DPO), ipo, hinge, robust, ... (TRL's names)
    num_train_epochs: float = 1.0
    max_length: int = 512
    gradient_checkpointing: bool = False


def train_dpo(recipe: DPORecipe, dataset=None) -> dict:
    """DPO with LoRA on top of the (merged) SFT model.  With a PEFT model TRL computes the
    reference log-probs with the adapter disabled: no second copy of the model in memory."""
    from trl import DPOConfig, DPOTrainer

    from cotlab.models import load_tokenizer

    pairs = load_training_dataset(dataset if dataset is not None else recipe.dataset)
    config = DPOConfig(beta=recipe.beta, loss_type=[recipe.loss_type], num_train_epochs=recipe.num_train_epochs,
                       max_length=recipe.max_length, activation_checkpointing=recipe.gradient_checkpointing, **_shared_args(recipe))
    trainer = DPOTrainer(
        model=_base_model(recipe.model, merge=_adapter_chain(recipe.adapter)),
        args=config, train_dataset=pairs, processing_class=load_tokenizer(recipe.model),
        peft_config=lora_config(recipe.lora_r, recipe.lora_alpha, 0.0, "all-linear"),
    )
    return _run_trainer(trainer, recipe, "dpo", {"train_pairs": len(pairs)})


# GRPO --------------------------------------------------------------------------------------------


@dataclass
class GRPORecipe(_LoRAStageRecipe):
    dataset: str = ""  # a task spec (rg:…, hf:…, a GSM8K-format file), or rows from cotlab.rewards.grpo_rows
    n_prompts: int = 256  # questions taken from a task spec's train split
    output_dir: str = "outputs/grpo"
    learning_rate: float = 1e-4
    max_steps: int = 20
    per_device_train_batch_size: int = 8  # counts completions: must be a multiple of num_generations
    num_generations: int = 4  # the group size
    max_completion_length: int = 96  # too short and most chains are cut off: reward stays 0
    temperature: float = 1.0
    beta: float = 0.0  # KL weight (TRL's default 0: no reference model needed)
    reward_weights: dict = field(default_factory=lambda: {"correctness": 1.0, "format": 0.2, "length": 0.0})
    loss_type: str = "dapo"
    scale_rewards: str = "group"
    use_vllm: bool | None = None  # None: vLLM when installed and a GPU is present

    def __post_init__(self):
        batch = self.per_device_train_batch_size * self.gradient_accumulation_steps
        if self.num_generations < 2:
            raise CotlabError("num_generations must be at least 2: GRPO compares completions within a group")
        if batch % self.num_generations:
            raise CotlabError(f"per_device_train_batch_size x gradient_accumulation_steps ({batch}) counts completions and "
                              f"must be a multiple of num_generations ({self.num_generations})")
        if self.max_completion_length < 16:
            raise CotlabError(f"max_completion_length {self.max_completion_length} is too short for any chain of thought")


def _grpo_prompts(source, recipe: GRPORecipe):
    """GRPO needs only questions and gold answers: a task spec is enough, no dataset to build."""
    from cotlab.data import load_records
    from cotlab.rewards import grpo_rows

    if isinstance(source, str) and (source.startswith(("rg:", "hf:")) or _is_task_file(source)):
        return load_training_dataset(grpo_rows(load_records(source, n=recipe.n_prompts, split="train", seed=recipe.seed)))
    return load_training_dataset(source)


def _is_task_file(path: str) -> bool:
    """A GSM8K-format JSONL (question/answer rows) rather than prepared prompt rows."""
    first = Path(path).open().readline() if Path(path).is_file() and path.endswith(".jsonl") else ""
    return '"question"' in first and '"prompt"' not in first


def train_grpo(recipe: GRPORecipe, dataset=None) -> dict:
    """GRPO with verifiable rewards (cotlab.rewards), LoRA on top of the (merged) SFT model."""
    trainer, info = build_grpo_trainer(recipe, dataset)
    return _run_trainer(trainer, recipe, "grpo", info)


def build_grpo_trainer(recipe: GRPORecipe, dataset=None):
    """TRL's GRPOTrainer set up from a recipe, and what the run card records about it."""
    from trl import GRPOConfig, GRPOTrainer

    from cotlab.generate import vllm_available
    from cotlab.models import load_tokenizer
    from cotlab.rewards import reward_functions

    prompts = _grpo_prompts(dataset if dataset is not None else recipe.dataset, recipe)
    functions, weights = reward_functions(recipe.reward_weights, recipe.max_completion_length)
    use_vllm = vllm_available() if recipe.use_vllm is None else recipe.use_vllm
    config = GRPOConfig(
        num_generations=recipe.num_generations, max_completion_length=recipe.max_completion_length,
        temperature=recipe.temperature, beta=recipe.beta, reward_weights=weights, loss_type=recipe.loss_type,
        scale_rewards=recipe.scale_rewards, use_vllm=use_vllm, **({"vllm_mode": "colocate"} if use_vllm else {}),
        activation_checkpointing=False, log_completions=False, **_shared_args(recipe),
    )
    tokenizer = load_tokenizer(recipe.model)
    tokenizer.padding_side = "left"
    trainer = GRPOTrainer(
        model=_base_model(recipe.model, merge=_adapter_chain(recipe.adapter)),
        reward_funcs=functions, args=config, train_dataset=prompts, processing_class=tokenizer,
        peft_config=lora_config(recipe.lora_r, recipe.lora_alpha, 0.0, "all-linear"),
    )
    return trainer, {"reward_names": [f.__name__ for f in functions], "reward_weights": weights, "use_vllm": use_vllm}


# Recipes on the command line ---------------------------------------------------------------------

RECIPES = {"sft": (SFTRecipe, "train_sft"), "dpo": (DPORecipe, "train_dpo"), "grpo": (GRPORecipe, "train_grpo")}


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
