"""The lesson notebooks' front door: `from cotlab import lesson`.

What every lesson does, in one place: load questions, score a model on them (in and out of
distribution, read back when already on disk), draw the stages side by side with Wilson intervals,
train a stage from a recipe, and find the run's SFT starting point.  A notebook imports this and its
own lesson module (`cotlab.lessons.NAME`), nothing else of cotlab; no helper is defined in a notebook.
"""

from __future__ import annotations

from pathlib import Path

from cotlab import CotlabError
from cotlab.budget import matched_budget
from cotlab.controls import answer_only_rows
from cotlab.data import load_records, training_split
from cotlab.distill import (accepted, explained, failed_ids, gold_rationales, mix_long_short, reject_sample,
                            removal_counts, save_dataset, shorten, star, to_sft_rows)
from cotlab.evaluate import answer_changes, earlier_rows, evaluate_to
from cotlab.evidence import (
    answer_changes_sentence,
    attribution_sentence,
    carry_over_sentence,
    correct_count,
    error_bars,
    family_comparisons,
    family_verdicts,
    paired_comparisons,
    qlora_sentence,
    run_family_verdicts,
    sft_change_sentence,
    short_runs_against,
    stage_lines,
    unadjusted_verdicts,
    verdicts,
)
from cotlab.generate import GenerationStats, SamplingConfig, generate
from cotlab.io import write_jsonl
from cotlab.layout import Run
from cotlab.logs import logged, mean_logged, reward_sentence, reward_summary
from cotlab.models import count_parameters, load_model, load_tokenizer
from cotlab.pairs import PAIR_MODES, pairs_from_samples
from cotlab.plots import (
    acceptance_and_coverage,
    accuracy_and_length,
    accuracy_by_length_lines,
    curves,
    faithfulness_figure,
    gain_vs_forgetting,
    length_histograms,
    pair_lengths,
    scaling_figure,
    training_curves,
    update_sizes,
)
from cotlab.prompts import build_messages, exemplars_from, render_prompt
from cotlab.recipes import DistillRecipe, DPORecipe, fields_of, GRPORecipe, SFTRecipe
from cotlab.rewards import grpo_rows
from cotlab.stats import (accuracy_phrase, across_seeds, all_controls, compare_paired, mde_paired, mde_phrase, mde_two_proportions,
                          over_seeds, over_seeds_verdict, paired_mde_phrase, paired_verdict, paper_claim_sentence, seeds_sentence,
                          trend_verdict, verdict_with_mde, with_holm)
from cotlab.teachers import GoldTeacher, LocalTeacher
from cotlab.training import load_training_dataset, train_and_score, train_dpo, train_grpo, train_onpolicy, train_sft

# Everything a lesson notebook imports: the pipeline's names a lesson uses, and the helpers below.
__all__ = ["acceptance_and_coverage", "accepted", "accuracy_and_length", "accuracy_by_length_lines", "accuracy_phrase",
           "across_seeds", "all_controls", "answer_changes", "answer_changes_sentence", "answer_only_rows",
           "attribution_sentence", "build_messages", "carry_over_sentence", "compare_paired", "correct_count", "CotlabError",
           "count_parameters", "curves", "DistillRecipe", "DPORecipe", "earlier_rows", "error_bars", "evaluate_to",
           "exemplars_from", "explained", "failed_ids", "faithfulness_figure", "family_comparisons", "family_verdicts",
           "fields_of", "gain_vs_forgetting", "generate", "GenerationStats", "gold_rationales", "GoldTeacher", "grpo_rows",
           "GRPORecipe", "length_histograms", "load_model", "load_records", "load_tokenizer", "load_training_dataset",
           "LocalTeacher", "logged", "matched_budget", "mde_paired", "mde_phrase", "mde_two_proportions", "mean_logged",
           "mix_long_short", "over_seeds", "over_seeds_verdict", "pair_lengths", "PAIR_MODES", "paired_comparisons",
           "paired_mde_phrase", "paired_verdict", "pairs_from_samples", "paper_claim_sentence", "qlora_sentence",
           "reject_sample", "removal_counts", "render_prompt", "reward_sentence", "reward_summary", "Run",
           "run_family_verdicts", "SamplingConfig", "save_dataset", "scaling_figure", "seed_runs", "seeds_sentence",
           "sft_change_sentence", "sft_start", "SFTRecipe", "short_runs_against", "shorten", "stage_figure", "stage_lines",
           "StageScores", "star", "train_and_score", "train_dpo", "train_grpo", "train_onpolicy", "train_sft",
           "training_curves", "trend_verdict", "unadjusted_verdicts", "update_sizes", "verdict_with_mde", "verdicts",
           "with_holm", "write_jsonl"]


class StageScores:
    """Each stage of a run scored on the same held-out questions, in distribution and (when `ood`
    is given) out of it, kept by stage name.  An evaluation already on disk, made the same way, is
    read back (`evaluate_to`): notebook 04 reuses notebook 02's."""

    def __init__(self, run: Run, model: str, held_out, sampling: SamplingConfig, task: str,
                 ood=None, ood_sampling: SamplingConfig | None = None, ood_task: str | None = None, backend: str = "hf"):
        self.run, self.model, self.held_out, self.sampling, self.task = run, model, held_out, sampling, task
        self.backend = backend  # cotlab.generate.choose_backend: hf, vllm or auto
        self.ood, self.ood_sampling, self.ood_task = ood, ood_sampling, ood_task
        self.evaluations, self.ood_evaluations = {}, {}

    def score(self, stage: str, adapter: str | None = None):
        """Score `stage` (the model plus `adapter`; a QLoRA adapter on its own 4-bit base)."""
        self.evaluations[stage] = evaluate_to(self.run.evaluation_dir(stage), self.held_out, model=self.model, adapter=adapter,
                                              sampling=self.sampling, data=self.task, backend=self.backend)
        if self.ood is not None:
            self.ood_evaluations[stage] = evaluate_to(self.run.evaluation_dir(stage, ood=True), self.ood, model=self.model,
                                                      adapter=adapter, sampling=self.ood_sampling, data=self.ood_task,
                                                      backend=self.backend)
        return self.evaluations[stage]

    def figure(self, order: list[str], title: str, name: str):
        """The stages side by side (and out of distribution beside them): accuracy with Wilson 95% intervals, and length."""
        labels = list(order) + [f"{s} (ood)" for s in order if s in self.ood_evaluations]
        results = [self.evaluations[s] for s in order] + [self.ood_evaluations[s] for s in order if s in self.ood_evaluations]
        return stage_figure(labels, results, title, self.run.figure(name))


def stage_figure(labels: list[str], results: list, title: str, path: str | Path | None = None):
    """Accuracy with Wilson 95% intervals and mean completion length of several evaluations."""
    counts = [correct_count(r.rows) for r in results]
    return accuracy_and_length(labels, [k / n for k, n in counts], error_bars(counts),
                               [r.summary["mean_completion_tokens"] for r in results], title, path)


def sft_start(run, model: str, task: str, folder: str | Path, steps: int, n_train: int = 64, data_seed: int = 0,
              seed: int = 0) -> tuple[str, str]:
    """(adapter, what it is): the run's SFT adapter (notebook 02), or when a lesson runs alone a
    short SFT on gold chains trained into `folder`.  A fallback trained there before is reused
    only through `train_sft`, which reads it back when its recipe and rows are the same and
    trains afresh (setting the old one aside) when they are not."""
    adapter = run.adapter("sft")
    if adapter:
        return adapter, "the run's SFT adapter (notebook 02)"
    rows = to_sft_rows(GoldTeacher().rationales(load_records(task, n=n_train, split=training_split(task), seed=data_seed)))
    metrics = train_sft(SFTRecipe(model=model, output_dir=str(folder), max_steps=steps, seed=seed, save_steps=10_000), rows)
    when = "by this lesson earlier" if metrics.get("reused") else "here"
    return metrics["output"], f"a {steps}-step SFT on {len(rows)} gold chains trained {when} (the run has no notebook-02 adapter)"


def seed_runs(stage: str, values: dict, train, data, seeds: list[int], run, held_out, sampling, task: str,
              backend: str = "hf") -> dict[int, list[dict]]:
    """The stage trained again with each further seed of `seeds` (the recipe's own seed is the main
    run, trained already): the same start, data and budget (`values`, the main recipe's dict), only
    the seed differs.  Each run is scored on the same held-out questions; {seed: rows}.  A run or
    evaluation already on disk with the same recipe is read back, so a resumed job does not redo it."""
    from cotlab.recipes import RECIPES

    found = {}
    for seed in seeds:
        if seed == values["seed"]:
            continue
        recipe = RECIPES[stage](**{**values, "seed": seed, "save_steps": 10_000, "output_dir": str(run.training_dir(stage, f"seed{seed}"))})
        metrics = train(recipe, data)
        found[seed] = evaluate_to(run.training_dir(stage).parent / f"eval_seed{seed}", held_out, model=values["model"],
                                  adapter=metrics["output"], sampling=sampling, data=task, backend=backend).rows
    return found
