"""What a run's evaluations show, with their noise beside every number.

summary.json, the "What we saw" cells of the training lessons and `cotlab report` all read the
per-question evaluations on disk through here (never accuracies copied from notebook to notebook),
and phrase them with cotlab.stats: a Wilson interval beside each accuracy, the exact McNemar test
for two stages scored on the same questions, a Student t interval for a mean over seeds.  The
pairs of one run (both distributions) are one family of tests: each direction follows its
Holm-adjusted p (`stats.holm`), and both p-values are printed.
"""

from __future__ import annotations

from pathlib import Path

from cotlab import CotlabError
from cotlab.layout import REPORT_STAGES, Run
from cotlab.stats import (accuracy_phrase, across_seeds, compare_paired, difference_verdict, eval_set_hash, fisher_exact,
                          holm, paired_verdict, verdict_with_mde, wilson_interval, with_holm)

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


def family_comparisons(by_label: dict[str, dict[str, list[dict]]], pairs=PAIRS) -> dict[str, dict[str, dict]]:
    """paired_comparisons() of each labelled set of stage rows (in distribution, out of
    distribution…), read as ONE family: every comparison gets its Holm-adjusted `p_holm` over all
    of them (`stats.with_holm`), so seven pairs in two distributions are not fourteen chances at a
    false direction at alpha each.  {label: {"A_vs_B": comparison}}."""
    flat = {(label, key): c for label, rows in by_label.items() for key, c in paired_comparisons(rows, pairs).items()}
    adjusted = with_holm(flat)
    return {label: {key: adjusted[label, key] for (owner, key) in adjusted if owner == label} for label in by_label}


def family_verdicts(family: dict[str, dict[str, dict]], alpha: float = ALPHA) -> list[str]:
    """'label: verdict' for every comparison of a family_comparisons() result (Holm-adjusted)."""
    return [f"{label}: " + verdict_with_mde(c, alpha) for label, comparisons in family.items() for c in comparisons.values()]


# The run's one Holm family: every pair of PAIRS both of whose stages were scored, in and out of
# distribution.  summary.json names it, and the notebook that prints these tests' adjusted p (04, once
# every stage is scored) reads it from here, so a test has one adjusted p per run.
RUN_FAMILY = "stage tests: every pair of scored stages (cotlab.evidence.PAIRS), in and out of distribution"
FAMILY_LABELS = {"": "In distribution", "_ood": "Out of distribution"}


def run_family(run_dir: str | Path) -> dict[str, dict[str, dict]]:
    """The run's Holm family as it stands on disk: {"" or "_ood": {"A_vs_B": comparison with p_holm}}."""
    run = Run(run_dir)
    return family_comparisons({suffix: stage_rows(run, ood) for ood, suffix in ((False, ""), (True, "_ood"))})


def run_family_verdicts(run_dir: str | Path, alpha: float = ALPHA) -> list[str]:
    """'In/Out of distribution: verdict' for every test of the run's Holm family, then the family's name and size."""
    family = run_family(run_dir)
    size = sum(len(tests) for tests in family.values())
    return ([f"{FAMILY_LABELS[suffix]}: " + verdict_with_mde(c, alpha) for suffix, tests in family.items() for c in tests.values()]
            + [f"(Holm-adjusted over the run's family of {size} tests, {RUN_FAMILY}; summary.json's holm_family)"])


def unadjusted_verdicts(by_label: dict[str, dict[str, list[dict]]], alpha: float = ALPHA, pairs=PAIRS) -> list[str]:
    """'label: verdict' for every pair scored on the same questions, on its own p: a notebook that
    runs before the run's family is complete (02) says so rather than adjust over part of it."""
    return [f"{label}: " + verdict_with_mde(c, alpha) + " (unadjusted)" for label, rows in by_label.items()
            for c in paired_comparisons(rows, pairs).values()]


def with_seeds(paired: dict, results: dict) -> dict:
    """summary.json's paired dpo_vs_sft and grpo_vs_sft, with how many training seeds stand behind
    them: notebooks 03 and 04 retrain the stage with further seeds from the same start (`over_seeds`
    in their results); without them, n_seeds is 1."""
    for key, lesson in (("dpo_vs_sft", "dpo"), ("grpo_vs_sft", "grpo")):
        if key not in paired:
            continue
        over = results.get(lesson, {}).get("over_seeds")
        if over and over.get("b") == "sft":
            paired[key].update({"n_seeds": over["n_seeds"], "over_seeds": {k: over[k] for k in (
                "wins", "losses", "ties", "p_value", "accuracy_a", "accuracy_b", "seeds_difference", "across_seeds")}})
        else:
            paired[key]["n_seeds"] = 1
    return paired


def run_evidence(run_dir: str | Path) -> dict:
    """The statistical part of a run's summary.json, from its evaluations on disk: per stage
    `accuracy` and Wilson 95% `interval`; `n_eval` and `eval_set` (the hash of the question ids);
    `paired` {"A_vs_B": wins (A right, B wrong), losses, p_value (exact McNemar), p_holm (Holm-adjusted
    over every pair of both distributions), family_size, n, difference}; `mean_completion_tokens`; and
    the same with an `_ood` suffix for the out-of-distribution evaluations; `dtype` {stage: the
    weights' dtype its evaluation ran in}."""
    run = Run(run_dir)
    evidence = {"dtype": {stage: result.summary.get("dtype") for stage in REPORT_STAGES
                          if (result := run.evaluation(stage)) is not None and result.rows}}
    by_suffix = {suffix: stage_rows(run, ood) for ood, suffix in ((False, ""), (True, "_ood"))}
    family = run_family(run_dir)
    evidence["holm_family"] = {"name": RUN_FAMILY, "size": sum(len(tests) for tests in family.values()),
                               "tests": [key + suffix for suffix, tests in family.items() for key in tests]}
    for suffix, rows in by_suffix.items():
        counts = {stage: correct_count(stage_result) for stage, stage_result in rows.items()}
        ids = sorted({r["id"] for stage_result in rows.values() for r in stage_result})
        evidence["accuracy" + suffix] = {stage: k / n for stage, (k, n) in counts.items()}
        evidence["mean_completion_tokens" + suffix] = {stage: sum(r.get("completion_tokens", 0) for r in stage_result) / len(stage_result)
                                                       for stage, stage_result in rows.items()}
        evidence["interval" + suffix] = {stage: list(wilson_interval(k, n)) for stage, (k, n) in counts.items()}
        evidence["n_eval" + suffix] = len(ids) or None
        evidence["eval_set" + suffix] = eval_set_hash(ids) if ids else None
        evidence["paired" + suffix] = {key: {k: c[k] for k in ("wins", "losses", "p_value", "p_holm", "family_size", "n", "difference")}
                                       for key, c in family[suffix].items()}
    with_seeds(evidence["paired"], run.results())
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
    questions; a cause is named only when its paired test clears alpha (its Holm-adjusted p when the
    comparisons come from family_comparisons)."""
    chain_p, format_p = (c.get("p_holm", c["p_value"]) for c in (chain, answer_format))
    chain_helps = chain_p < alpha and chain["wins"] > chain["losses"]
    chain_hurts = chain_p < alpha and chain["wins"] < chain["losses"]
    format_helps = format_p < alpha and answer_format["wins"] > answer_format["losses"]
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


def carry_over_sentence(ood_sft_vs_base: dict, alpha: float = ALPHA) -> str:
    """Does SFT's gain carry over out of distribution?  Answered by SFT against the base model on
    the SAME out-of-distribution questions (paired, exact McNemar), never by SFT in distribution
    against SFT out of distribution: those questions are harder and scored with more new tokens,
    so that difference mixes the question set's difficulty with the training's effect."""
    verdict = paired_verdict(ood_sft_vs_base, alpha)
    p = ood_sft_vs_base.get("p_holm", ood_sft_vs_base["p_value"])
    if p < alpha and ood_sft_vs_base["wins"] > ood_sft_vs_base["losses"]:
        return f"Yes: out of distribution SFT still beats the base model on the same questions ({verdict})."
    if p < alpha and ood_sft_vs_base["wins"] < ood_sft_vs_base["losses"]:
        return f"No, it reverses: out of distribution SFT is worse than the base model on the same questions ({verdict})."
    return (f"Not detected: out of distribution SFT cannot be told from the base model at this sample size "
            f"(absence of evidence, not evidence of no gain; {verdict}).")


def short_runs_against(reference: str, runs: dict[str, dict], n: int, alpha: float = ALPHA) -> list[str]:
    """Each short comparison run against `reference` (e.g. gold LoRA r=16) on the same n questions,
    one family: Fisher's exact test on the two accuracies (the runs kept no per-question rows, so
    no pairing: conservative for runs on the same questions), Holm-adjusted over the family, a
    direction only when the adjusted p clears alpha.  No 'best vs worst': that pair is chosen
    after seeing the results, so its test would be biased.  The first line says what is not
    matched: full fine-tuning runs at a smaller learning rate and the data sets differ in size."""
    if reference not in runs:
        raise CotlabError(f"no short run '{reference}' to compare the others with (runs: {', '.join(runs) or 'none'})")
    count = {label: round(run["accuracy"] * n) for label, run in runs.items()}
    others = [label for label in runs if label != reference]
    raw = {label: fisher_exact(count[label], n, count[reference], n) for label in others}
    adjusted = holm(raw)
    lines = [f"Short runs against {reference} ({n} questions each): not a matched sweep (full fine-tuning uses a smaller "
             "learning rate, the data sets differ in size and content), so each line describes one run against the reference "
             f"and none ranks them; Fisher's exact p, Holm-adjusted over {len(others)} comparison{'' if len(others) == 1 else 's'}."]
    for label in others:
        evidence = (f"{label} {accuracy_phrase(count[label], n)} vs {reference} {100 * count[reference] / n:.0f}%, "
                    f"Fisher p = {raw[label]:.2g}, Holm p = {adjusted[label]:.2g}")
        if adjusted[label] < alpha:
            lines.append(f"{label} is {'higher' if count[label] > count[reference] else 'lower'} than {reference}: {evidence}")
        else:
            lines.append(f"{label} vs {reference}: no difference detected at this sample size ({evidence})")
    return lines


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
    """paired_verdict() of every pair in `rows` scored on the same questions, each prefixed by
    `label`; the pairs are one family, so each direction follows its Holm-adjusted p."""
    return [label + verdict_with_mde(c, ALPHA) for c in with_holm(paired_comparisons(rows, pairs)).values()]


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


def sft_change_sentence(train_rows: int, train_set: str, steps: int, minutes: float, before: dict, after: dict) -> str:
    """What an SFT run changed in the answers' form: format compliance and mean length, base -> SFT."""
    def moved(key, fmt):
        a, b = before[key], after[key]
        word = "rose" if b > a else "fell" if b < a else "stayed"
        return f"{word} {fmt.format(a)} -> {fmt.format(b)}"
    return (f"CoT SFT on {train_rows} {train_set} rows for {steps} steps ({minutes:.1f} min): format compliance "
            f"{moved('format_ok_ratio', '{:.0%}')}; mean length {moved('mean_completion_tokens', '{:.0f}')} tokens.")


def qlora_sentence(qlora: dict, lora: dict, rank: int) -> str:
    """QLoRA against LoRA at the same rank, one run each: weights memory, peak memory, speed."""
    ratio = lora["weights_memory_mb"] / qlora["weights_memory_mb"]
    size = f"{ratio:.1f}x smaller" if ratio > 1 else f"{1 / ratio:.1f}x larger (4-bit saved nothing here)"
    speed = "slower" if qlora["tokens_per_second"] < lora["tokens_per_second"] else "faster"
    return (f"QLoRA vs LoRA r={rank}: weights {qlora['weights_memory_mb']:.0f} vs {lora['weights_memory_mb']:.0f} MB ({size}), "
            f"peak memory {qlora['peak_memory_mb']:.0f} vs {lora['peak_memory_mb']:.0f} MB, {qlora['tokens_per_second']:.0f} vs "
            f"{lora['tokens_per_second']:.0f} tokens/s ({speed}; one run each, no interval).")
