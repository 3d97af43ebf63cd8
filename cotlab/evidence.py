"""What a run's evaluations show, with their noise beside every number.

summary.json, the "What we saw" cells of the training lessons and `cotlab report` all read the
per-question evaluations on disk through here (never accuracies copied from notebook to notebook),
and phrase them with cotlab.stats: a Wilson interval beside each accuracy, the exact McNemar test
for two stages scored on the same questions, a Student t interval for a mean over seeds.
"""

from __future__ import annotations

from pathlib import Path

from cotlab import CotlabError
from cotlab.layout import REPORT_STAGES, Run
from cotlab.stats import (accuracy_phrase, across_seeds, compare_paired, difference_verdict, eval_set_hash,
                          paired_verdict, wilson_interval)

# (A, B) pairs every run summary tests when both stages were scored on the same questions
PAIRS = (("sft", "base"), ("sft_answer_only", "base"), ("sft", "sft_answer_only"), ("dpo", "sft"),
         ("grpo", "sft"), ("grpo", "dpo"), ("grpo", "base"))
ALPHA = 0.05


def pair_key(a: str, b: str) -> str:
    return f"{a}_vs_{b}"


def correct_count(rows: list[dict]) -> tuple[int, int]:
    """(questions right, questions asked) of one evaluation's rows."""
    if not rows:
        raise CotlabError("an evaluation with no rows has no accuracy")
    return sum(bool(r["correct"]) for r in rows), len(rows)


def error_bars(counts: list[tuple[int, int]]) -> list[list[float]]:
    """matplotlib's asymmetric yerr ([below], [above]) from each accuracy k/n to the ends of its
    Wilson 95% interval: bars that, unlike ±1 standard error, stay inside [0, 1] and do not
    vanish at 0% or 100%."""
    below, above = [], []
    for k, n in counts:
        low, high = wilson_interval(k, n)
        below.append(k / n - low)
        above.append(high - k / n)
    return [below, above]


def stage_rows(run: Run, ood: bool = False) -> dict[str, list[dict]]:
    """{stage: per-question rows} of every stage this run evaluated (in or out of distribution)."""
    found = {}
    for stage in REPORT_STAGES:
        result = run.evaluation(stage, ood)
        if result is not None and result.rows:
            found[stage] = result.rows
    return found


def paired_comparisons(rows: dict[str, list[dict]], pairs=PAIRS) -> dict[str, dict]:
    """compare_paired() of each (A, B) pair present in `rows` and scored on the same questions;
    a pair on different questions gets no paired test (there is no pairing to exploit)."""
    found = {}
    for a, b in pairs:
        if a in rows and b in rows and {r["id"] for r in rows[a]} == {r["id"] for r in rows[b]}:
            found[pair_key(a, b)] = compare_paired(rows[a], rows[b], a, b)
    return found


def run_evidence(run_dir: str | Path) -> dict:
    """The statistical part of a run's summary.json, from its evaluations on disk: per stage
    `accuracy` and Wilson 95% `interval`; `n_eval` and `eval_set` (the hash of the question ids);
    `paired` {"A_vs_B": wins (A right, B wrong), losses, p_value (exact McNemar), n, difference};
    `mean_completion_tokens`; and the same with an `_ood` suffix for the out-of-distribution evaluations."""
    run = Run(run_dir)
    evidence = {}
    for ood, suffix in ((False, ""), (True, "_ood")):
        rows = stage_rows(run, ood)
        counts = {stage: correct_count(stage_result) for stage, stage_result in rows.items()}
        ids = sorted({r["id"] for stage_result in rows.values() for r in stage_result})
        evidence["accuracy" + suffix] = {stage: k / n for stage, (k, n) in counts.items()}
        evidence["mean_completion_tokens" + suffix] = {stage: sum(r.get("completion_tokens", 0) for r in stage_result) / len(stage_result)
                                                       for stage, stage_result in rows.items()}
        evidence["interval" + suffix] = {stage: list(wilson_interval(k, n)) for stage, (k, n) in counts.items()}
        evidence["n_eval" + suffix] = len(ids) or None
        evidence["eval_set" + suffix] = eval_set_hash(ids) if ids else None
        evidence["paired" + suffix] = {key: {k: c[k] for k in ("wins", "losses", "p_value", "n", "difference")}
                                       for key, c in paired_comparisons(rows).items()}
    return evidence


# Sentences ----------------------------------------------------------------------------------------


def stage_lines(rows: dict[str, list[dict]], ood_rows: dict[str, list[dict]] | None = None) -> list[str]:
    """One line per stage: its accuracy with the Wilson interval, and out of distribution when scored."""
    lines = []
    for stage, stage_result in rows.items():
        line = f"{stage}: {accuracy_phrase(*correct_count(stage_result))}"
        if ood_rows and stage in ood_rows:
            line += f"; out of distribution {accuracy_phrase(*correct_count(ood_rows[stage]))}"
        lines.append(line)
    return lines


def attribution_sentence(chain: dict, answer_format: dict, alpha: float = ALPHA) -> str:
    """Why did CoT SFT help: the chain, or only the answer format?  `chain` is compare_paired(sft,
    sft_answer_only), `answer_format` is compare_paired(sft_answer_only, base), both on the same
    questions; a cause is named only when its paired test clears alpha."""
    chain_helps = chain["p_value"] < alpha and chain["wins"] > chain["losses"]
    chain_hurts = chain["p_value"] < alpha and chain["wins"] < chain["losses"]
    format_helps = answer_format["p_value"] < alpha and answer_format["wins"] > answer_format["losses"]
    if chain_helps:
        return ("The chain of thought itself helps: CoT SFT beats the answer-only control trained on the same rows, "
                "steps and seed" + (", and the format alone also beats the base model." if format_helps else "."))
    if chain_hurts:
        return "The chain of thought costs accuracy here: the answer-only control beats CoT SFT on the same questions."
    if format_helps:
        return ("The answer format alone explains the gain we can measure: the answer-only control beats the base model, "
                "and CoT SFT cannot be told apart from it.")
    return "These questions cannot tell whether the chain of thought or the answer format made the difference."


def short_run_verdict(a: str, b: str, runs: dict[str, dict], n: int) -> str:
    """difference_verdict() for two short comparison runs that kept only their accuracy on the same
    n questions.  Without per-question rows there is no pairing, so the runs are treated as
    independent samples (Newcombe's interval), which is conservative for runs on the same questions."""
    k_a, k_b = (round(runs[label]["accuracy"] * n) for label in (a, b))
    return difference_verdict(k_a, n, k_b, n, a, b) + " (treated as independent samples: conservative)"


def training_budget(metrics: dict | None) -> str:
    """'45 steps at learning rate 0.001 from the base model (LoRA r=16)', from a stage's metrics.json."""
    if not metrics:
        return "an unrecorded budget"
    recipe = metrics.get("recipe", {})
    start = "the SFT adapter" if recipe.get("adapter") else "the base model"
    trained = f"LoRA r={recipe['lora_r']}" if recipe.get("lora_r") else "all weights"
    return f"{metrics['steps']} step{'' if metrics['steps'] == 1 else 's'} at learning rate {recipe.get('learning_rate', float('nan')):g} from {start} ({trained})"


def answer_changes_sentence(sft_changes: dict, rl_changes: dict, sft_metrics: dict | None, rl_metrics: dict | None,
                            rl: str = "grpo", start: str = "sft") -> str:
    """Describe answer_changes() of SFT (against base) and of an RL stage (against its start) and
    say why no conclusion follows: *Scalpel vs. Hammer* compares methods at matched starts and
    budgets with full fine-tuning; here the two stages differ in both, and all are LoRA."""
    moved = {name: c["fixed"] + c["broken"] for name, c in (("sft", sft_changes), (rl, rl_changes))}
    return (f"SFT changed {moved['sft']} answers relative to the base model ({sft_changes['fixed']} fixed, "
            f"{sft_changes['broken']} broken); {rl} changed {moved[rl]} relative to {start} ({rl_changes['fixed']} fixed, "
            f"{rl_changes['broken']} broken). We draw no conclusion about Scalpel vs. Hammer's claim from these counts: "
            f"SFT ran {training_budget(sft_metrics)} and {rl} ran {training_budget(rl_metrics)}, so the two differ in "
            "starting point and budget as well as in method, and every stage here trains a LoRA adapter where the paper "
            "fine-tuned all weights.")


def verdicts(rows: dict[str, list[dict]], pairs=PAIRS, label: str = "") -> list[str]:
    """paired_verdict() of every pair in `rows` scored on the same questions, each prefixed by `label`."""
    return [label + paired_verdict(c, ALPHA) for c in paired_comparisons(rows, pairs).values()]


# Across runs -------------------------------------------------------------------------------------


def ordered_stages(stages) -> list[str]:
    """The pipeline's stages in REPORT_STAGES order, then any others by name."""
    return [s for s in REPORT_STAGES if s in stages] + sorted(set(stages) - set(REPORT_STAGES))


def across_runs(summaries: list[dict], key: str = "accuracy") -> dict[str, dict]:
    """{stage: mean, interval (Student t 95% of the mean, None from one run), std, n_runs} of one
    per-stage metric over runs (stats.across_seeds), for every stage any run scored."""
    stages = ordered_stages({s for summary in summaries for s in summary.get(key, {})})
    found = {}
    for stage in stages:
        spread = across_seeds([summary[key][stage] for summary in summaries if stage in summary.get(key, {})])
        found[stage] = {**spread, "interval": list(spread["interval"]) if spread["interval"] else None}
    return found


def across_runs_phrase(stage: str, spread: dict) -> str:
    """'sft: mean 38% over 3 runs (95% t interval 30–46%)'; one run has no spread to show."""
    if spread["interval"] is None:
        return f"{stage}: {100 * spread['mean']:.0f}% from a single run (no spread across seeds to estimate)"
    low, high = spread["interval"]
    return (f"{stage}: mean {100 * spread['mean']:.0f}% over {spread['n_runs']} runs "
            f"(95% t interval of the mean {100 * low:.0f}–{100 * high:.0f}%)")
