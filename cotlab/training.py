"""Training stages on TRL: SFT (LoRA, QLoRA or full), DPO, GRPO and on-policy distillation.

Each stage is one function taking a recipe (`cotlab.recipes`: TRL's own config plus cotlab's
fields); the notebooks, `cotlab train STAGE --config recipe.yaml` and `accelerate launch -m
cotlab.train STAGE --config recipe.yaml` all call the same function, so a recipe that ran on a
laptop runs unchanged under DDP, DeepSpeed ZeRO or FSDP (configs/accelerate/).

What TRL already does we leave to TRL: completion-only loss for prompt/completion data,
packing, PEFT wrapping (and the DPO reference model as the adapter-disabled base), GRPO's
group-relative advantages, on-policy distillation's sampling and divergence.  What we add: the
model loaded once in an explicit dtype (a distillation teacher too, frozen), throughput and peak
memory, resume from the last complete checkpoint, one summary and model card written by the main
process, and errors that name the knob to turn.

Reading order: the four stages, each a `train_*` function and the `build_*` that sets up its TRL
trainer; then what every stage shares (`provenance`, reuse and resumption, `run_trainer`,
`finish`, the model card); then the helpers.
"""

from __future__ import annotations

import functools
import json
import os
import resource
import time
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import torch

from cotlab import CotlabError
from cotlab.guards import LearningSignalGuard, check_chat_template, check_rewards, checked_reward, watch_held_out
from cotlab.io import atomic_write_json, atomic_write_text, read_jsonl, set_aside
from cotlab.lm_head import fit_trl_lm_head_to_cpu
from cotlab.models import (BASE_ADAPTERS_FILE, adapter_chain, base_adapters_record, hub_id, load_base, load_model, load_tokenizer,
                           weights_digest, weights_dtype)
from cotlab.recipes import (BOOKKEEPING_FIELDS, SCHEDULE_FIELDS, DistillRecipe, DPORecipe, GRPORecipe, SFTRecipe, changed_fields,
                            lora_config)
from cotlab.progress import TextProgress, text_progress_wanted


class Built(NamedTuple):
    """What every `build_*` returns: TRL's trainer, ready to train, and what the run's metrics
    record about how it was set up (rows, pairs or prompts trained on; GRPO's rewards)."""

    trainer: object
    extra: dict


# SFT ---------------------------------------------------------------------------------------------


def train_sft(recipe: SFTRecipe, dataset=None, eval_dataset=None) -> dict:
    """Supervised fine-tuning on prompt/completion (or messages) rows; loss on the completion only
    (TRL's default for prompt/completion rows). Resumes from the last checkpoint in output_dir;
    reads a finished identical run back without loading the model (`train_or_reuse`)."""
    rows = load_training_dataset(dataset if dataset is not None else recipe.dataset)
    return train_or_reuse("sft", recipe, rows, lambda start: build_sft_trainer(recipe, rows, eval_dataset, start))


def build_sft_trainer(recipe: SFTRecipe, dataset=None, eval_dataset=None, start: Provenance | None = None) -> Built:
    """TRL's SFTTrainer set up from a recipe (what train_sft runs; bench/ times it directly)."""
    from trl import SFTTrainer

    rows = load_training_dataset(dataset if dataset is not None else recipe.dataset)
    fit_trl_lm_head_to_cpu()
    trainer = SFTTrainer(model=base_model(recipe, start), args=recipe, processing_class=load_tokenizer(recipe.model),
                         train_dataset=rows, eval_dataset=eval_dataset, peft_config=lora_config(recipe))
    return Built(trainer, {"train_rows": len(rows)})


def train_and_score(recipe: SFTRecipe, dataset, held_out, sampling) -> dict:
    """One comparison run: train an SFT recipe, then score it greedily on `held_out` (on its own
    4-bit base under QLoRA); accuracy, length, throughput and memory side by side."""
    from cotlab.evaluate import evaluate

    metrics = train_sft(recipe, dataset)
    if recipe.lora_r:
        model, tokenizer = load_model(recipe.model, adapter=metrics["output"], load_in_4bit=recipe.load_in_4bit, dtype=recipe.dtype)
    else:
        model, tokenizer = load_model(metrics["output"], dtype=recipe.dtype)
    summary = evaluate(model, tokenizer, held_out, style="think", sampling=sampling, progress=False).summary
    kept = ("accuracy", "accuracy_stderr", "mean_completion_tokens", "format_ok_ratio")
    return {**{k: summary[k] for k in kept}, "rows": metrics["train_rows"], "trainable": f"r={recipe.lora_r}" if recipe.lora_r else "all",
            # the embedded base is a Q4_1 GGUF dequantised to the load dtype: not "full precision"
            "base": "nf4" if recipe.load_in_4bit else f"{recipe.model} dequantised" if recipe.model == "embedded" else recipe.model,
            **{k: metrics[k] for k in ("tokens_per_second", "peak_memory_mb", "weights_memory_mb")}}


# DPO ---------------------------------------------------------------------------------------------


def train_dpo(recipe: DPORecipe, dataset=None, held_out=None, held_out_sampling=None) -> dict:
    """DPO with LoRA on top of the (merged) SFT model.  With a PEFT model TRL computes the
    reference log-probs with the adapter disabled: no second copy of the model in memory.
    `held_out` records, with the recipe's `eval_every`, log `heldout/accuracy` beside the DPO
    rewards (cotlab.guards.HeldOutAccuracy)."""
    pairs = load_training_dataset(dataset if dataset is not None else recipe.dataset)
    return train_or_reuse("dpo", recipe, pairs, lambda start: build_dpo_trainer(recipe, pairs, held_out, held_out_sampling, start))


def build_dpo_trainer(recipe: DPORecipe, pairs, held_out=None, held_out_sampling=None, start: Provenance | None = None) -> Built:
    """TRL's DPOTrainer set up from a recipe, the chat template checked before the model loads."""
    from trl import DPOTrainer

    tokenizer = load_tokenizer(recipe.model)
    if recipe.guards != "off":
        check_chat_template(tokenizer, pairs, recipe.model)
    fit_trl_lm_head_to_cpu()
    trainer = DPOTrainer(model=base_model(recipe, start), args=recipe, train_dataset=pairs,
                         processing_class=tokenizer, peft_config=lora_config(recipe))
    watch_held_out(trainer, recipe, held_out, held_out_sampling)
    return Built(trainer, {"train_pairs": len(pairs)})


# GRPO --------------------------------------------------------------------------------------------


def train_grpo(recipe: GRPORecipe, dataset=None, held_out=None, held_out_sampling=None) -> dict:
    """GRPO with verifiable rewards (cotlab.rewards), LoRA on top of the (merged) SFT model;
    `held_out` records, with the recipe's `eval_every`, log `heldout/accuracy` beside the reward."""
    prompts, rewards = grpo_inputs(recipe, dataset)
    return train_or_reuse("grpo", recipe, prompts,
                          lambda start: build_grpo_trainer(recipe, prompts, held_out, held_out_sampling, start, rewards))


def build_grpo_trainer(recipe: GRPORecipe, dataset=None, held_out=None, held_out_sampling=None, start: Provenance | None = None,
                       rewards: list | None = None) -> Built:
    """TRL's GRPOTrainer set up from a recipe, and what the run card records about it.  The
    preflight checks (chat template, one reward per completion) run before the model loads.
    `rewards` given: `dataset` is the prompts `grpo_inputs` made with them (train_grpo's call);
    else both are made here (bench/ calls it alone)."""
    from trl import GRPOTrainer

    prompts, functions = (dataset, rewards) if rewards is not None else grpo_inputs(recipe, dataset)
    tokenizer = load_tokenizer(recipe.model)
    tokenizer.padding_side = "left"
    if recipe.guards != "off":
        check_chat_template(tokenizer, prompts, recipe.model)
        check_rewards(functions, prompts, tokenizer)
    guard = LearningSignalGuard(recipe.guards, recipe.guard_steps, recipe.max_completion_length)
    fit_trl_lm_head_to_cpu()
    trainer = GRPOTrainer(model=base_model(recipe, start), reward_funcs=[checked_reward(f) for f in functions], args=recipe,
                          train_dataset=prompts, processing_class=tokenizer, peft_config=lora_config(recipe), callbacks=[guard])
    watch_held_out(trainer, recipe, held_out, held_out_sampling)
    return Built(trainer, {"reward_names": [f.__name__ for f in functions], "reward_weights": recipe.reward_weights,
                           "use_vllm": recipe.use_vllm})


def grpo_inputs(recipe: GRPORecipe, dataset=None) -> tuple:
    """(prompts, reward functions) of a GRPO run, each made once; sets the recipe's
    `reward_weights` (TRL's, from cotlab's `rewards`), which is part of the fingerprint."""
    from cotlab.rewards import reward_functions

    prompts = prompt_rows(dataset if dataset is not None else recipe.dataset, recipe)
    functions, recipe.reward_weights = reward_functions(recipe.rewards, recipe.max_completion_length)
    return prompts, functions


# On-policy distillation ---------------------------------------------------------------------------


def train_onpolicy(recipe: DistillRecipe, dataset=None) -> dict:
    """On-policy distillation (TRL's DistillationTrainer): the student (the recipe's model, with a
    LoRA) samples a completion of each prompt, the frozen teacher scores every token of it, and the
    student moves toward the teacher's next-token distribution on its own samples (reverse KL at
    TRL's default beta 1.0).  Prompts as for GRPO (`prompt_rows`); resumes and reuses as every stage."""
    prompts = prompt_rows(dataset if dataset is not None else recipe.dataset, recipe)
    return train_or_reuse("onpolicy", recipe, prompts, lambda start: build_onpolicy_trainer(recipe, prompts, start))


def build_onpolicy_trainer(recipe: DistillRecipe, prompts, start: Provenance | None = None) -> Built:
    """TRL's DistillationTrainer set up from a recipe; the chat template is checked before any model loads."""
    from trl import DistillationTrainer

    tokenizer = load_tokenizer(recipe.model)
    tokenizer.padding_side = "left"  # TRL generates from left-padded prompts
    check_chat_template(tokenizer, prompts, recipe.model)
    teacher = load_teacher(recipe)
    fit_trl_lm_head_to_cpu()
    trainer = DistillationTrainer(model=base_model(recipe, start), teacher_model=teacher, args=recipe, train_dataset=prompts,
                                  processing_class=tokenizer, peft_config=lora_config(recipe))
    return Built(trainer, {"train_prompts": len(prompts), "teacher": recipe.teacher, "teacher_adapter": recipe.teacher_adapter})


STAGES = {"sft": train_sft, "dpo": train_dpo, "grpo": train_grpo, "onpolicy": train_onpolicy}


def run_stage(stage: str, recipe) -> dict:
    """Train one stage from its recipe; the main process prints the metrics (the CLI's output)."""
    metrics = STAGES[stage](recipe)
    if int(os.environ.get("RANK", "0")) == 0:
        print(json.dumps({k: v for k, v in metrics.items() if k not in ("log_history", "recipe")}, indent=2))
    return metrics


# What every stage shares: provenance, reuse and resumption, training, saving ----------------------


@dataclass(frozen=True)
class Provenance:
    """Where a run starts and what decides what it produces, worked out once per run
    (`provenance`) and read by everything after: reuse (`finished_run`), resumption
    (`start_or_resume`), the starting weights (`base_model`) and what is written beside the
    adapter (`write_outputs`, the model card)."""

    base_hub_id: str | None   # the base model's hub id (None for tiny-random and local folders)
    adapter_chain: list[str]  # the adapters merged into the base before training, in order
    fingerprint: dict         # `recipe_fingerprint`: the recipe's fields, the data and the weight digests

    @property
    def start_weights(self) -> str | None:
        """The digest of the weights the run starts from (the adapter chain, or a local full model)."""
        return self.fingerprint["start_weights"]

    @property
    def teacher_weights(self) -> str | None:
        """The digest of a distillation teacher's weights; None for the other stages."""
        return self.fingerprint.get("teacher_weights")


def provenance(recipe, train_dataset=None) -> Provenance:
    """The run's provenance record.  The adapter chain is checked here, before anything loads: an
    adapter under it retrained since is an error naming the stage to retrain."""
    fingerprint = recipe_fingerprint(recipe, train_dataset)
    return Provenance(base_hub_id=hub_id(recipe.model), adapter_chain=adapter_chain(recipe.adapter), fingerprint=fingerprint)


def train_or_reuse(stage: str, recipe, data, build) -> dict:
    """The finished run's metrics when output_dir holds this very run (`finished_run`), else
    `build(start)` -> `Built` (start: the run's `Provenance`), trained through `run_trainer`.
    Every stage goes through here, so reuse is decided by the fingerprint alone."""
    start = provenance(recipe, data)
    done = finished_run(recipe, start.fingerprint)
    if done is not None:
        print(f"{recipe.output_dir} already holds this {stage} run ({done['steps']} steps, same recipe, data and start): read back")
        return done
    trainer, extra = build(start)
    return run_trainer(trainer, recipe, stage, extra, start)


FINGERPRINT = "fingerprint.json"


def recipe_fingerprint(recipe, train_dataset=None) -> dict:
    """What decides what a training run produces: the recipe's fields, the training data
    (`datasets`' content fingerprint, so rows passed in memory count too) and the starting
    weights (the digest of the adapter chain it trains on: an SFT retrained into the same folder
    makes a DPO or GRPO run on top of it stale); for distillation the teacher's weights too."""
    fields = {k: v for k, v in json.loads(recipe.to_json_string()).items() if k not in BOOKKEEPING_FIELDS and k not in SCHEDULE_FIELDS}
    teacher = {"teacher_weights": weights_digest(recipe.teacher_adapter, recipe.teacher)} if isinstance(recipe, DistillRecipe) else {}
    return {**fields, "train_data": getattr(train_dataset, "_fingerprint", None),
            "start_weights": weights_digest(recipe.adapter, recipe.model), **teacher}


def schedule(recipe) -> dict:
    return {key: getattr(recipe, key) for key in SCHEDULE_FIELDS}


def afresh_because(earlier: dict | None, fingerprint: dict, recipe) -> str | None:
    """Why output_dir's earlier run cannot be continued by `recipe` (None: it can, or there is none)."""
    if earlier is None:
        return None
    changed = sorted(k for k in set(earlier) | set(fingerprint) if k != "schedule" and earlier.get(k) != fingerprint.get(k))
    if changed or not earlier:
        return ", ".join(f"{k} {earlier.get(k)!r} -> {fingerprint.get(k)!r}" for k in changed[:4]) or "unknown provenance"
    before, now = earlier.get("schedule", schedule(recipe)), schedule(recipe)
    fewer = before["max_steps"] > now["max_steps"] or (before["max_steps"] != now["max_steps"] and min(before["max_steps"], now["max_steps"]) <= 0)
    if fewer or before["num_train_epochs"] != now["num_train_epochs"]:
        return ", ".join(f"{k} {before[k]!r} -> {now[k]!r}" for k in SCHEDULE_FIELDS if before[k] != now[k])
    return None


def _read_json(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.is_file() else None


def finished_run(recipe, fingerprint: dict) -> dict | None:
    """The metrics of the run already in output_dir when it is this very run, finished (same
    fingerprint and schedule, final/ and metrics.json written at the recipe's step count); None
    otherwise.  A notebook re-run with the same parameters then costs nothing: no model is loaded."""
    out = Path(recipe.output_dir)
    earlier, done = _read_json(out / FINGERPRINT), _read_json(out / "metrics.json")
    final = out / "final"
    if earlier is None or done is None or not any((final / name).is_file() for name in ("adapter_config.json", "config.json")):
        return None
    if afresh_because(earlier, fingerprint, recipe) or earlier.get("schedule") != schedule(recipe):
        return None
    if recipe.max_steps > 0 and done.get("steps") != recipe.max_steps:
        return None
    paths = {"output": str(final), **({"merged": str(out / "merged")} if "merged" in done else {})}
    return {**done, **paths, "reused": True}  # paths as they are now: the run directory may have moved


def start_or_resume(trainer, recipe, fingerprint: dict) -> str | None:
    """The checkpoint to resume from: the last complete one when output_dir was made by this very
    recipe; when it was made by another (a notebook re-run with a new learning rate, or fewer
    steps, say), that earlier run is set aside as output_dir.earlier-N, never overwritten, and
    training starts afresh."""
    out = Path(recipe.output_dir)
    path = out / FINGERPRINT
    if trainer.is_world_process_zero():
        earlier = _read_json(path)
        if earlier is None and last_checkpoint(out):
            earlier = {}  # checkpoints from a run that recorded no fingerprint: provenance unknown
        reason = afresh_because(earlier, fingerprint, recipe)
        if reason:
            print(f"{out} was trained with other settings ({reason}): kept as {set_aside(out)}; training afresh")
        atomic_write_json(path, {**fingerprint, "schedule": schedule(recipe)})
    trainer.accelerator.wait_for_everyone()
    return last_checkpoint(out)


def text_progress_in_batch_logs(trainer) -> None:
    """Under `cotlab run` with its output going to a log file, a notebook's HTML progress bar shows
    nothing, and so does the Trainer's "text" bar: it is tqdm.auto's, a widget again inside a
    kernel.  Print the progress as lines instead (`cotlab.progress`: steps, rate and ETA at least
    every COTLAB_PROGRESS_SECONDS), which papermill copies into the log."""
    if not text_progress_wanted():
        return
    from transformers.trainer_callback import ProgressCallback
    from transformers.utils.notebook import NotebookProgressCallback

    if trainer.pop_callback(NotebookProgressCallback) is not None or trainer.pop_callback(ProgressCallback) is not None:
        trainer.add_callback(_text_progress_callback_class())


@functools.cache
def _text_progress_callback_class():
    from transformers.trainer_callback import ProgressCallback
    from transformers.trainer_utils import has_length

    class TextProgressCallback(ProgressCallback):
        """ProgressCallback (its logged metrics too) with `cotlab.progress.TextProgress` for bars."""

        def on_train_begin(self, args, state, control, **kwargs):
            if state.is_world_process_zero:  # a resumed run counts its rate and ETA from where it resumed
                self.training_bar = TextProgress(state.max_steps, "training", initial=state.global_step, unit="steps")
            self.current_step = state.global_step

        def on_prediction_step(self, args, state, control, eval_dataloader=None, **kwargs):
            if state.is_world_process_zero and has_length(eval_dataloader):
                if self.prediction_bar is None:
                    self.prediction_bar = TextProgress(len(eval_dataloader), "evaluating", unit="batches")
                self.prediction_bar.update(1)

    return TextProgressCallback


def run_trainer(trainer, recipe, stage: str, extra: dict | None, start: Provenance) -> dict:
    """Train, resuming from the last complete checkpoint of the same recipe, then save and return the
    metrics; a GPU out-of-memory error becomes one line naming the knobs that fix it."""
    try:
        text_progress_in_batch_logs(trainer)
        measured = measure_training(trainer, resume_from_checkpoint=start_or_resume(trainer, recipe, start.fingerprint))
    except torch.cuda.OutOfMemoryError:
        knobs = [f"per_device_train_batch_size (now {recipe.per_device_train_batch_size}; raise gradient_accumulation_steps to keep the batch)"]
        if not recipe.activation_checkpointing:
            knobs.append("activation_checkpointing: true")
        if not recipe.load_in_4bit:
            knobs.append("load_in_4bit: true (QLoRA)")
        for length in ("max_length", "max_completion_length", "num_generations"):
            if getattr(recipe, length, None):
                knobs.append(f"{length} (now {getattr(recipe, length)})")
        raise CotlabError("GPU out of memory while training; lower " + ", or ".join(knobs)) from None
    except CotlabError:  # a guard (cotlab.guards) stopped training mid-step
        _close_progress_bars(trainer)
        raise
    return finish(trainer, recipe, stage, measured, extra, start=start)


def _close_progress_bars(trainer) -> None:
    """End the progress bar's line, so the error that follows stands on a line of its own."""
    for callback in trainer.callback_handler.callbacks:
        for name in ("training_bar", "prediction_bar"):
            bar = getattr(callback, name, None)
            if bar is not None:
                bar.close()
                setattr(callback, name, None)


def precision_name(args) -> str:
    """The mixed precision a Trainer's arguments train in, as metrics and bench/ record it."""
    return "bf16" if args.bf16 else "fp16" if args.fp16 else "fp32"


def measure_training(trainer, resume_from_checkpoint: str | None = None) -> dict:
    """Run trainer.train() and measure it: wall time, this run's peak memory, the weights' own
    memory (4-bit under QLoRA: what QLoRA saves, apart from activations and optimiser state),
    tokens trained and tokens/s.  The stages and bench/ both measure through here.  A resumed run
    is measured over what this call trained (`resumed_from_step` onwards): tokens and seconds of
    the same segment, so tokens/s is not the whole run's tokens over the last segment's time."""
    before = tokens_at(resume_from_checkpoint, trainer)
    if hasattr(trainer, "_total_train_tokens"):
        trainer._total_train_tokens = before  # SFT and DPO count from 0 in every Trainer: continue the run's count
    reset_peak_memory()
    start = time.perf_counter()
    trainer.train(resume_from_checkpoint=resume_from_checkpoint)
    wall = time.perf_counter() - start
    resumed = int(Path(resume_from_checkpoint).name.split("-")[-1]) if resume_from_checkpoint else 0
    return {"wall_seconds": round(wall, 1), "peak_memory_mb": round(peak_memory_mb(), 1), "resumed_from_step": resumed,
            "weights_memory_mb": round(trainer.model.get_memory_footprint() / 2**20, 2), **_throughput(trainer, wall, before)}


def tokens_at(checkpoint: str | None, trainer) -> int:
    """Tokens the run had trained when `checkpoint` was saved, on the counter TRL logs as
    `num_tokens`: GRPO's is the Trainer state's num_input_tokens_seen, saved with the checkpoint;
    SFT's and DPO's is their own, read from the checkpoint's last logged value."""
    state = _read_json(Path(checkpoint) / "trainer_state.json") if checkpoint else None
    if state is None:
        return 0
    if not hasattr(trainer, "_total_train_tokens"):
        return int(state.get("num_input_tokens_seen") or 0)
    return max((int(e.get("num_tokens", 0)) for e in state.get("log_history", [])), default=0)


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


def _throughput(trainer, wall: float, before: int = 0) -> dict:
    """Tokens over all processes: TRL's logged `num_tokens` is already gathered across ranks (SFT
    and DPO sum `gather_for_metrics` of each batch's tokens, GRPO of the prompt and completion
    lengths), so the figure and tokens/s are the whole run's, not one GPU's; less `before`, the
    count at the checkpoint this call resumed from."""
    tokens = max((int(entry.get("num_tokens", 0)) for entry in trainer.state.log_history), default=0) - before
    return {"train_tokens": max(tokens, 0), "tokens_per_second": round(tokens / wall, 1) if wall and tokens > 0 else 0.0}


def across_processes(trainer, value: float) -> list[float]:
    """One figure from every process (a collective: every rank must call it); on one process, [value]."""
    return trainer.accelerator.gather(torch.tensor([float(value)], device=trainer.accelerator.device)).tolist()


def final_loss(trainer) -> float:
    """The last loss the Trainer logged (already the mean over processes), or, for a run shorter
    than logging_steps, its `train_loss`, which the Trainer leaves per-process: averaged here."""
    history = trainer.state.log_history
    logged = [e["loss"] for e in history if "loss" in e]
    if logged:
        return logged[-1]
    ends = [e["train_loss"] for e in history if "train_loss" in e]
    if not ends:
        return float("nan")
    values = across_processes(trainer, ends[-1])
    return sum(values) / len(values)


def finish(trainer, recipe, stage: str, measured: dict, extra: dict | None = None, *, start: Provenance) -> dict:
    """Save the adapter (or full model), then, on the main process only, the recipe, a model card
    and metrics; return the metrics (on every process, once the main process has written them).

    Under torchrun or `accelerate launch` every figure is the run's, not one process's: tokens
    summed over processes, the loss as the Trainer reports it (averaged over processes), the
    slowest process's wall time and the largest peak memory of any process, with `world_size`.
    `start`: the run's provenance, which the adapter's files and card record."""
    out = Path(recipe.output_dir)
    final = out / "final"
    trainer.save_model(str(final))  # every rank takes part: FSDP and ZeRO-3 gather the weights here
    # Collectives first, on every rank; only then may rank 0 alone write.
    measured = {**measured, **{key: round(max(across_processes(trainer, measured[key])), 1) for key in ("wall_seconds", "peak_memory_mb")}}
    if measured["wall_seconds"]:
        measured["tokens_per_second"] = round(measured["train_tokens"] / measured["wall_seconds"], 1)
    metrics = {
        "stage": stage,
        "model": recipe.model,
        "output": str(final),
        "steps": trainer.state.global_step,
        "world_size": trainer.args.world_size,
        "dtype": weights_dtype(trainer.model),
        "precision": precision_name(trainer.args),
        **measured,
        "log_history": trainer.state.log_history,
        "recipe": recipe.to_dict(),
        **(extra or {}),
        "final_loss": final_loss(trainer),
    }
    if recipe.merge and hasattr(trainer.model, "merge_and_unload"):
        metrics["merged"] = str(out / "merged")
    if trainer.is_world_process_zero():
        write_outputs(trainer, recipe, stage, metrics, start)
    # The other ranks wait here, so that on return the adapter, card and metrics.json are complete
    # on every process (a next stage, or an evaluation, may read them at once).
    trainer.accelerator.wait_for_everyone()
    return metrics


def write_outputs(trainer, recipe, stage: str, metrics: dict, start: Provenance) -> None:
    """The main process's part of `finish`: tokenizer, adapter chain, merged model, recipe, metrics, card."""
    out, final = Path(recipe.output_dir), Path(metrics["output"])
    trainer.processing_class.save_pretrained(str(final))
    if start.adapter_chain:
        atomic_write_json(final / BASE_ADAPTERS_FILE, base_adapters_record(final, start.adapter_chain))
    if "merged" in metrics:
        trainer.model.merge_and_unload().save_pretrained(metrics["merged"])
        trainer.processing_class.save_pretrained(metrics["merged"])
    atomic_write_text(final / "recipe.json", recipe.to_json_string())
    atomic_write_json(out / "metrics.json", metrics)
    record_base_model(final, start.base_hub_id)
    write_model_card(final, stage, recipe, metrics, start)


def record_base_model(folder: Path, base: str | None) -> None:
    """Name the base by its hub id in adapter_config.json (PEFT wrote the local path it loaded,
    e.g. cotlab's cache), so the adapter loads with plain PEFT on any machine."""
    config = folder / "adapter_config.json"
    if base and config.is_file():
        atomic_write_json(config, {**json.loads(config.read_text()), "base_model_name_or_path": base})


def write_model_card(folder: Path, stage: str, recipe, metrics: dict, start: Provenance) -> None:
    """Keep the YAML metadata PEFT wrote (base_model, library_name: peft, tags: what the hub
    indexes) with the base named by hub id, and put cotlab's training facts in place of PEFT's
    empty template; a full fine-tune gets the same metadata, as a transformers model."""
    from huggingface_hub import ModelCard

    path = folder / "README.md"
    card = ModelCard.load(path) if path.is_file() else ModelCard("---\nlibrary_name: transformers\n---\n")
    base = start.base_hub_id
    tags = set(card.data.tags or []) | {"cotlab", "trl", stage}
    if base:
        kind = "adapter" if (folder / "adapter_config.json").is_file() else "finetune"
        tags = {t for t in tags if not t.startswith("base_model:")} | {f"base_model:{kind}:{base}"}
        card.data.base_model = base
    card.data.tags = sorted(tags)
    card.text = model_card(stage, recipe, metrics, start)
    atomic_write_text(path, str(card))


def model_card(stage: str, recipe, metrics: dict, start: Provenance) -> str:
    import importlib.metadata as md

    fields = "\n".join(f"| {k} | {v} |" for k, v in changed_fields(recipe).items())
    base = start.base_hub_id
    origin = " (dequantised from its Q4_1 GGUF)" if recipe.model == "embedded" else ""
    chain = start.adapter_chain
    versions = ", ".join(f"{p} {md.version(p)}" for p in ("transformers", "trl", "peft"))
    resumed = metrics.get("resumed_from_step", 0)
    resumed_note = f"(resumed at step {resumed}: time and speed are of its last {metrics['steps'] - resumed} steps) " if resumed else ""
    return (
        f"# cotlab {stage.upper()} output\n\n"
        f"Base model: `{recipe.model}`{f' = `{base}`' if base else ''}{origin}"
        f"{f'; trained on top of these adapters, merged in order: {chain}' if chain else ''}.\n\n"
        f"Trained with cotlab ({stage}, TRL) for {metrics['steps']} steps "
        f"{resumed_note}"
        f"in {metrics['wall_seconds']} s on {metrics['world_size']} process(es); {metrics['tokens_per_second']} tokens/s; "
        f"peak memory {metrics['peak_memory_mb']} MB; final loss {metrics.get('final_loss')}.\n\n"
        f"Prompt format: the think format of `cotlab.prompts` (`<think>…</think>` then `<answer>…</answer>`).\n\n"
        f"Recipe fields that differ from their defaults (every field: recipe.json):\n\n"
        f"| recipe field | value |\n|---|---|\n{fields}\n\n"
        f"Framework versions: {versions}.\n"
    )


# Helpers -----------------------------------------------------------------------------------------


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
        try:
            dataset = datasets.load_from_disk(str(path))
        except FileNotFoundError:
            raise CotlabError(f"{path} is not a dataset folder (one written by save_to_disk, as cotlab distill does)") from None
        if isinstance(dataset, datasets.DatasetDict):
            raise CotlabError(f"{path} holds the splits {', '.join(dataset)}: name one split's folder, e.g. {path / next(iter(dataset))}")
        return dataset
    if path.is_file():
        rows = read_jsonl(path)
        if not rows:
            raise CotlabError(f"{path} holds no rows")
        return datasets.Dataset.from_list(rows)
    placeholder = " (RUN_DIR is a placeholder: --set dataset=runs/NAME/... names a real run)" if "RUN_DIR" in str(source) else ""
    raise CotlabError(f"training dataset not found: {source}{placeholder}")


def base_model(recipe, start: Provenance | None = None):
    """The starting weights of a stage: the recipe's model in its dtype (4-bit under QLoRA), with
    the adapters its own adapter was trained on, and that adapter, merged in (the chain from the
    run's `start` provenance, else worked out here)."""
    chain = start.adapter_chain if start is not None else adapter_chain(recipe.adapter)
    return load_base(recipe.model, recipe.dtype, recipe.load_in_4bit, merge=chain, attn_implementation=recipe.attn_implementation)


def prompt_rows(source, recipe: GRPORecipe | DistillRecipe):
    """GRPO and on-policy distillation need only questions (and GRPO's rewards the gold answers):
    a task spec is enough, no dataset to build; `n_prompts` of its train split."""
    from cotlab.data import load_records, training_split
    from cotlab.rewards import grpo_rows

    if isinstance(source, str) and (source.startswith(("rg:", "hf:")) or _is_task_file(source)):
        records = load_records(source, n=recipe.n_prompts, split=training_split(source), seed=recipe.seed)
        return load_training_dataset(grpo_rows(records))
    return load_training_dataset(source)


def _is_task_file(path: str) -> bool:
    """A GSM8K-format JSONL (question/answer rows) rather than prepared prompt rows."""
    first = Path(path).open().readline() if Path(path).is_file() and path.endswith(".jsonl") else ""
    return ('"question"' in first or '"problem"' in first) and '"prompt"' not in first


def load_teacher(recipe: DistillRecipe):
    """The teacher of a distillation recipe through cotlab's one loading path: its model in the
    recipe's dtype, its adapter (and the adapters under it) merged into the weights, eval mode,
    every weight frozen; on this process's GPU under a launcher (TRL places it from there)."""
    if not recipe.teacher:
        raise CotlabError("an on-policy distillation recipe needs a teacher: set teacher (embedded, tiny-random, a folder or "
                          "a hub id) and, for a fine-tuned teacher, teacher_adapter")
    device = f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}" if torch.cuda.is_available() else None
    teacher, _ = load_model(recipe.teacher, adapter=recipe.teacher_adapter, device=device, dtype=recipe.dtype)
    if recipe.teacher_adapter:
        teacher = teacher.merge_and_unload()
    teacher.eval()
    teacher.requires_grad_(False)
    return teacher
