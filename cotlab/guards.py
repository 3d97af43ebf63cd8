"""Guards that stop a preference or RL run that cannot learn, and the held-out metric beside its reward.

TRL logs the signs of a GRPO run that learns nothing and trains on regardless: a group whose
completions all earn the same reward has zero advantage (`frac_reward_zero_std`), and a
completion cut off at `max_completion_length` never reaches its answer
(`completions/clipped_ratio`).  *DAPO: An Open-Source LLM Reinforcement Learning System at Scale*
filters such zero-variance groups out for this reason; with every group like that there is no
gradient at all, and a run of hours ends with the adapter it started from.  So:

- before any model loads: the tokenizer has a chat template (the prompts are chat messages), and
  each reward function returns one number per completion on a small made-up batch;
- while training: every reward function still returns one number per completion (`checked_reward`),
  and over the first `guard_steps` logged steps `LearningSignalGuard` stops the run, in one line,
  when every group's rewards were identical or every completion was clipped.

The recipe's `guards` switch: `error` (stop), `warn` (log and train on: the tiny random model of
the smoke profile never closes a chain) or `off`.  The preflight checks find what would crash the
run anyway, so `warn` leaves them errors; only `off` skips them.

The reward is what the policy optimises, not the task: *Concrete Problems in AI Safety* calls a
policy that raises its reward without doing the task better reward hacking.  `HeldOutAccuracy`
logs greedy accuracy on held-out questions into the same log history, so a hacked reward shows
as reward up, `heldout/accuracy` flat.
"""

from __future__ import annotations

import functools
import inspect
import logging

from transformers import Trainer, TrainerCallback, TrainerState

from cotlab import CotlabError

GUARD_MODES = ("error", "warn", "off")
log = logging.getLogger("cotlab.guards")

# Made-up completions for the reward preflight: one in the think format, one cut off at once.
_SAMPLE_COMPLETIONS = ("<think>2 + 3 = 5</think>\n<answer>5</answer>", "")


def check_chat_template(tokenizer, dataset, model: str) -> None:
    """Chat-message prompts need the tokenizer's chat template; TRL's own error comes mid-setup."""
    if len(dataset) and isinstance(dataset[0]["prompt"], list) and not getattr(tokenizer, "chat_template", None):
        raise CotlabError(f"the tokenizer of {model} has no chat template, and the prompts are chat messages: "
                          "start from an instruct model or give the tokenizer a chat_template")


def check_rewards(functions, dataset, tokenizer) -> None:
    """Call each reward function the way GRPOTrainer will, on two prompts with two made-up
    completions each: one number per completion, or a one-line error naming the function."""
    rows = [dataset[i % len(dataset)] for i in range(2) for _ in _SAMPLE_COMPLETIONS]
    texts = list(_SAMPLE_COMPLETIONS) * 2
    conversational = isinstance(rows[0]["prompt"], list)
    completions = [[{"role": "assistant", "content": t}] if conversational else t for t in texts]
    columns = {key: [row[key] for row in rows] for key in rows[0] if key not in ("prompt", "completion", "completion_ids")}
    batch = dict(prompts=[row["prompt"] for row in rows], completions=completions,
                 completion_ids=[tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts], **columns,
                 trainer_state=TrainerState(), log_extra=lambda *a, **k: None, log_metric=lambda *a, **k: None)
    for function in functions:
        if not _plain_callable(function):
            continue
        try:
            scores = checked_reward(function)(**batch)
        except CotlabError:
            raise
        except Exception as e:
            raise CotlabError(f"reward function {_name(function)} failed on a sample batch: {type(e).__name__}: "
                              f"{' '.join(str(e).split())}") from None
        for score in scores:
            if score is not None and not _is_number(score):
                raise CotlabError(f"reward function {_name(function)} returned a {type(score).__name__}, not a number")


def checked_reward(function):
    """The reward function, raising a one-line error naming it when it returns a number of scores
    other than one per completion (TRL raises a ValueError from deep inside a training step)."""
    if not _plain_callable(function):
        return function

    @functools.wraps(function)
    def checked(*args, completions, **kwargs):
        scores = function(*args, completions=completions, **kwargs)
        if scores is None or len(scores) != len(completions):
            got = "None" if scores is None else f"{len(scores)} scores"
            raise CotlabError(f"reward function {_name(function)} returned {got} for {len(completions)} completions: "
                              "it must return one number per completion")
        return scores

    return checked


def _plain_callable(function) -> bool:
    """A synchronous function; reward models (nn.Module) and async functions TRL calls its own way."""
    import torch

    return callable(function) and not isinstance(function, torch.nn.Module) and not inspect.iscoroutinefunction(function)


def _name(function) -> str:
    return getattr(function, "__name__", type(function).__name__)


def _is_number(value) -> bool:
    try:
        float(value)
    except (TypeError, ValueError):
        return False
    return True


def learning_signal_problems(entries: list[dict], max_completion_length: int | None) -> list[str]:
    """What in these logged GRPO steps means no learning: every completion clipped, every group's
    rewards identical.  Empty when the steps show a signal."""
    if not entries:
        return []
    problems = []
    if all(e.get("completions/clipped_ratio") is not None and e["completions/clipped_ratio"] >= 1.0 for e in entries):
        problems.append(f"every completion hit max_completion_length ({max_completion_length}) before its answer: "
                        "raise max_completion_length, or start from a model that closes its chain (SFT first)")
    if all(e.get("frac_reward_zero_std") is not None and e["frac_reward_zero_std"] >= 1.0 for e in entries):
        rewards = [e["reward"] for e in entries if e.get("reward") is not None]
        mean = f" (mean reward {sum(rewards) / len(rewards):.2f})" if rewards else ""
        problems.append(f"every group's rewards were identical{mean}, so every advantage was 0: raise temperature "
                        "or num_generations, or check that the reward can tell completions apart")
    return problems


class LearningSignalGuard(TrainerCallback):
    """Stops GRPO (mode "error") or warns ("warn") when the first `window` logged steps all show no
    learning signal; the check runs once, after `window` logged steps or at the last step."""

    def __init__(self, mode: str = "error", window: int = 2, max_completion_length: int | None = None):
        if mode not in GUARD_MODES:
            raise CotlabError(f"guards must be one of {', '.join(GUARD_MODES)}, got {mode!r}")
        self.mode, self.window, self.max_completion_length = mode, max(1, window), max_completion_length
        self.entries: list[dict] = []
        self.checked = mode == "off"

    def on_log(self, args, state, control, logs=None, **kwargs):
        if self.checked or not logs or "frac_reward_zero_std" not in logs:
            return
        self.entries.append(dict(logs))
        if len(self.entries) < self.window and state.global_step < state.max_steps:
            return
        self.checked = True
        problems = learning_signal_problems(self.entries, self.max_completion_length)
        if not problems:
            return
        message = f"GRPO cannot learn: in the first {state.global_step} step(s) " + "; and ".join(problems)
        if self.mode == "error":
            raise CotlabError(message + " (the recipe's guards: warn trains on anyway)")
        log.warning("cotlab: warning: %s", message)


class HeldOutAccuracy(TrainerCallback):
    """Greedy accuracy on held-out records with the model being trained, every `every` steps (and
    at step 0 and the last step), logged as `heldout/accuracy` beside the training reward.

    Every process evaluates: under FSDP or ZeRO-3 each holds a shard, and generation needs all of
    them; the log itself is written by the main process as usual.
    """

    def __init__(self, trainer, records, every: int, sampling):
        if every < 1:
            raise CotlabError(f"eval_every must be positive to log held-out accuracy, got {every}")
        if not records:
            raise CotlabError("held-out accuracy needs held-out records: the list is empty")
        self.trainer, self.records, self.every, self.sampling = trainer, list(records), every, sampling

    def on_train_begin(self, args, state, control, **kwargs):
        if state.global_step == 0:
            self.log_accuracy()

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step % self.every == 0 or state.global_step >= state.max_steps:
            self.log_accuracy()

    def log_accuracy(self) -> dict:
        from cotlab.evaluate import evaluate

        trainer = self.trainer
        model = trainer.accelerator.unwrap_model(trainer.model)
        tokenizer = trainer.processing_class
        was_training, padding_side = model.training, tokenizer.padding_side
        model.eval()
        try:
            summary = evaluate(model, tokenizer, self.records, style="think", sampling=self.sampling, progress=False).summary
        finally:
            model.train(was_training)
            tokenizer.padding_side = padding_side  # generation pads on the left; DPO's collator may not
        logs = {f"heldout/{key}": summary[key] for key in ("accuracy", "format_ok_ratio", "mean_completion_tokens")}
        # Trainer.log itself, not TRL's override: that one would flush the step's half-gathered
        # metrics.  Logging resets the step's should_log, which the step's own log still needs.
        should_log = trainer.control.should_log
        Trainer.log(trainer, logs)
        trainer.control.should_log = should_log
        return logs


def watch_held_out(trainer, recipe, held_out, sampling=None) -> None:
    """Add `HeldOutAccuracy` when the recipe's `eval_every` asks for it; `eval_every` without
    held-out records is an error, held-out records with `eval_every: 0` are left unused."""
    if not recipe.eval_every:
        return
    if held_out is None:
        raise CotlabError(f"eval_every is {recipe.eval_every} but no held-out records were given: pass held_out= "
                          "(the notebooks do), or set eval_every: 0")
    if sampling is None:
        from cotlab.generate import SamplingConfig

        sampling = SamplingConfig(max_new_tokens=getattr(recipe, "max_completion_length", None) or 256, batch_size=16)
    trainer.add_callback(HeldOutAccuracy(trainer, held_out, recipe.eval_every, sampling))
