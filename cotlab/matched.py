"""Matched comparisons: change one thing, hold the budget, repeat over seeds, say what is noise.

Two lessons use it:

- *Which GRPO objective?*  TRL's `loss_type` grpo (*DeepSeekMath*: a mean over each completion's
  tokens), dr_grpo (*Understanding R1-Zero-Like Training: A Critical Perspective*: a constant
  normaliser, no length bias), dapo (*DAPO: An Open-Source LLM Reinforcement Learning System at
  Scale*: a mean over every token of the batch, TRL's default), bnpo (the same over the local
  batch), and GSPO's sequence-level importance ratio (*Group Sequence Policy Optimization*).
  `same_updates` says which of them TRL computes identically under a given set-up, before any run.
- *What in a chain teaches?*  SFT sets built from the same gold rows with only the chain changed
  (`cotlab.chains.CHAIN_EDITS`, after *LLMs Can Easily Learn to Reason from Demonstrations:
  Structure, not content, is what matters!*), plus a longer, self-checking form for *Through the
  Valley: Path to Effective Long CoT Training for Small Language Models*.  These sets are
  deliberately corrupted controls: they never go through `cotlab.distill.save_dataset`, which
  rightly refuses wrong arithmetic steps.
"""

from __future__ import annotations

import random
from pathlib import Path

from cotlab import CotlabError
from cotlab.chains import CHAIN_EDITS, arithmetic_steps, prune_to_calculations
from cotlab.coverage import logged
from cotlab.prompts import sft_example
from cotlab.stats import across_seeds, eval_set_hash, mcnemar_exact

# The starting point ------------------------------------------------------------------------------


def sft_start(run, model: str, task: str, folder: str | Path, steps: int, n_train: int = 64, data_seed: int = 0,
              seed: int = 0) -> tuple[str, str]:
    """(adapter, what it is): the run's SFT adapter (notebook 02), or when a lesson runs alone a
    short SFT on gold chains trained into `folder`.  A fallback trained there before is reused
    only through `train_sft`, which reads it back when its recipe and rows are the same and
    trains afresh (setting the old one aside) when they are not."""
    adapter = run.adapter("sft")
    if adapter:
        return adapter, "the run's SFT adapter (notebook 02)"
    from cotlab.data import load_records, training_split
    from cotlab.distill import to_sft_rows
    from cotlab.recipes import SFTRecipe
    from cotlab.teachers import GoldTeacher
    from cotlab.training import train_sft

    rows = to_sft_rows(GoldTeacher().rationales(load_records(task, n=n_train, split=training_split(task), seed=data_seed)))
    metrics = train_sft(SFTRecipe(model=model, output_dir=str(folder), max_steps=steps, seed=seed, save_steps=10_000), rows)
    when = "by this lesson earlier" if metrics.get("reused") else "here"
    return metrics["output"], f"a {steps}-step SFT on {len(rows)} gold chains trained {when} (the run has no notebook-02 adapter)"


def trained_once(train, recipe, dataset) -> dict:
    """`train(recipe, dataset)`.  A repeated lesson costs nothing: the training functions read a
    finished run of the same recipe, data and starting weights back without loading a model
    (`cotlab.training.finished_run`), and retrain when any of them changed; a metrics.json alone
    is no proof of that, so this no longer reads one."""
    return train(recipe, dataset)


# GRPO objectives ---------------------------------------------------------------------------------

OBJECTIVES = {
    "grpo": {"loss_type": "grpo"},
    "dr_grpo": {"loss_type": "dr_grpo"},
    "dapo": {"loss_type": "dapo"},
    "bnpo": {"loss_type": "bnpo"},
    # GSPO aggregates like GRPO; TRL warns that the token-summing losses do not reproduce the paper.
    "gspo": {"loss_type": "grpo", "importance_sampling_level": "sequence"},
}


def objective_settings(name: str) -> dict:
    """The GRPORecipe fields that make one objective."""
    if name not in OBJECTIVES:
        raise CotlabError(f"unknown GRPO objective '{name}': choose from {', '.join(OBJECTIVES)}")
    return dict(OBJECTIVES[name])


def same_updates(names: list[str], num_iterations: int = 1, gradient_accumulation_steps: int = 1,
                 steps_per_generation: int | None = None, world_size: int = 1) -> list[list[str]]:
    """Groups of objectives whose updates TRL 1.16 computes identically under this set-up (read
    from its `_compute_loss`).  On-policy (one pass over each generation batch) every importance
    ratio is exactly 1, so GSPO's sequence-level ratio gives GRPO's gradient; with one process and
    one micro-batch per step, DAPO's global token count is BNPO's local one."""
    steps_per_generation = steps_per_generation or gradient_accumulation_steps
    on_policy = num_iterations == 1 and steps_per_generation <= gradient_accumulation_steps
    one_batch = world_size == 1 and gradient_accumulation_steps == 1 and steps_per_generation == 1
    groups: dict[tuple, list[str]] = {}
    for name in names:
        settings = objective_settings(name)
        loss, level = settings["loss_type"], settings.get("importance_sampling_level", "token")
        level = "token" if on_policy and loss == "grpo" else level
        groups.setdefault(("bnpo" if one_batch and loss == "dapo" else loss, level), []).append(name)
    return list(groups.values())


# Fields that may differ between runs of one matched comparison without changing its budget.
BOOKKEEPING = ("output_dir", "logging_dir", "run_name", "seed", "data_seed")


def matched_budget(recipes: dict, varying: tuple[str, ...] = ("loss_type", "importance_sampling_level")) -> dict:
    """Check that runs differ only in `varying` (and the seed and output folder), so a difference
    in outcome is the objective's and not the budget's; return the fields they share."""
    if not recipes:
        raise CotlabError("matched_budget needs at least one recipe")
    ignored = set(varying) | set(BOOKKEEPING)
    labelled = {label: {k: v for k, v in r.to_dict().items() if k not in ignored} for label, r in recipes.items()}
    first_label, shared = next(iter(labelled.items()))
    for label, fields in labelled.items():
        differ = sorted(k for k in shared.keys() | fields.keys() if shared.get(k) != fields.get(k))
        if differ:
            raise CotlabError(f"not a matched comparison: {label} and {first_label} differ in {', '.join(differ)}")
    return shared


def mean_logged(log_history: list[dict], key: str, last_fraction: float = 1.0) -> float | None:
    """The mean of a logged metric over the last `last_fraction` of its logged steps (None when
    it was never logged)."""
    values = logged(log_history, key)[1]
    if not values:
        return None
    tail = values[-max(1, round(last_fraction * len(values))):]
    return sum(tail) / len(tail)


def seed_difference_verdict(a: str, b: str, metric: str, values_a: list[float], values_b: list[float],
                            scale: float = 1.0, unit: str = "", confidence: float = 0.95) -> str:
    """A minus B on one metric, seed by seed (run i of A and run i of B share seed i): the mean
    difference with its Student t interval across seeds; a direction only when it excludes zero."""
    if len(values_a) != len(values_b) or not values_a:
        raise CotlabError(f"{a} and {b} need one value per seed each, got {len(values_a)} and {len(values_b)}")
    summary = across_seeds([x - y for x, y in zip(values_a, values_b)], confidence)
    mean = summary["mean"] * scale
    if summary["interval"] is None:
        return f"{a} − {b} {metric}: {mean:+.3g}{unit} from a single seed; a second seed is needed for an interval"
    low, high = (x * scale for x in summary["interval"])
    evidence = (f"{mean:+.3g}{unit} on average over {summary['n_runs']} seeds, {confidence:.0%} t interval "
                f"{low:+.3g}{unit} to {high:+.3g}{unit}")
    side = "higher" if low > 0 else "lower" if high < 0 else None
    if side is None:
        return f"{a} vs {b} {metric}: no difference we can tell from seed-to-seed noise ({evidence})"
    return f"{a} has {side} {metric} than {b}: {evidence}"


def pooled_paired(a_rows_by_seed: dict, b_rows_by_seed: dict, a: str, b: str) -> dict:
    """Objective A against B on the same held-out questions over several seeds, question by
    question: for each question, on how many seeds A was right and on how many B was; a win when
    A's count is higher, a loss when lower, a tie otherwise; the exact two-sided sign test
    (`stats.mcnemar_exact`) on wins and losses.  Why not one pair per (seed, question): the same
    question recurs once per seed, and a question that is easy for A and hard for B is so on every
    seed, so those pairs are not independent and the pooled p-value would be too small.  One
    outcome per question keeps the test's assumption.  `accuracy_a`/`accuracy_b` are the means
    over all seeds' answers, `n` the number of questions, `seeds` how many seeds each count is of."""
    if a_rows_by_seed.keys() != b_rows_by_seed.keys() or not a_rows_by_seed:
        raise CotlabError(f"{a} and {b} need runs for the same seeds")
    counts: dict = {}
    for side, by_seed in ((0, a_rows_by_seed), (1, b_rows_by_seed)):
        for seed, rows in by_seed.items():
            right = {row["id"]: bool(row["correct"]) for row in rows}
            if counts and right.keys() != counts.keys():
                raise CotlabError(f"every seed of {a} and {b} must answer the same questions (seed {seed} differs)")
            for qid, correct in right.items():
                counts.setdefault(qid, [0, 0])[side] += correct
    wins = sum(x > y for x, y in counts.values())
    losses = sum(x < y for x, y in counts.values())
    seeds, n = len(a_rows_by_seed), len(counts)
    accuracy_a, accuracy_b = (sum(c[side] for c in counts.values()) / (n * seeds) for side in (0, 1))
    return {"a": a, "b": b, "wins": wins, "losses": losses, "ties": n - wins - losses, "n": n, "seeds": seeds,
            "p_value": mcnemar_exact(wins, losses), "accuracy_a": accuracy_a, "accuracy_b": accuracy_b,
            "difference": accuracy_a - accuracy_b, "eval_set": eval_set_hash(list(counts))}


def objective_figure(histories: dict[str, list[list[dict]]], keys: list[str], accuracy: dict[str, dict], path=None):
    """One panel per logged metric (a faint line per seed, a bold one for their mean at each
    step) and a last panel of held-out accuracy with its across-seed t interval."""
    import matplotlib.pyplot as plt

    keys = [k for k in keys if any(k in e for runs in histories.values() for h in runs for e in h)]
    fig, axes = plt.subplots(1, len(keys) + 1, figsize=(3.6 * (len(keys) + 1), 3.2), squeeze=False)
    for ax, key in zip(axes[0], keys):
        for i, (name, runs) in enumerate(histories.items()):
            series = [dict(zip(*logged(h, key))) for h in runs]
            for points in series:
                ax.plot(list(points), list(points.values()), color=f"C{i}", alpha=0.3, lw=0.8)
            steps = sorted(set.intersection(*(set(p) for p in series))) if series else []
            ax.plot(steps, [sum(p[s] for p in series) / len(series) for s in steps], color=f"C{i}", marker=".", label=name)
        ax.set(title=key, xlabel="step")
    names = list(accuracy)
    half = [(s["interval"][1] - s["mean"]) if s["interval"] else 0 for s in accuracy.values()]
    axes[0][-1].bar(range(len(names)), [s["mean"] for s in accuracy.values()], yerr=half, capsize=4, color=[f"C{i}" for i in range(len(names))])
    axes[0][-1].set_xticks(range(len(names)), names, rotation=15)
    axes[0][-1].set(title="held-out accuracy (t interval)", ylim=(0, 1))
    if keys:
        axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    if path:
        fig.savefig(path, dpi=110)
    return fig


# What in a chain teaches -------------------------------------------------------------------------


def _checked_backwards(step) -> str | None:
    """'15 - 43 = -28' -> '-28 + 43 = 15': the step undone, for a two-number step on whole numbers."""
    if len(step.operands) != 2:
        return None
    (a, b), result, operator = step.operands, step.result, step.operators[0]
    if b <= 0 or any(x.denominator != 1 for x in (a, b, result)):
        return None
    inverse = {"+": "-", "-": "+", "*": "/", "/": "*"}[operator]
    return f"{int(result)} {inverse} {int(b)} = {int(a)}"


def with_checks(chain: str, rng: random.Random | None = None) -> str:
    """The long form: after every line, each of its two-number steps undone as a check
    ('check: -28 + 43 = 15'), so the chain doubles its lines while every step stays right (how many
    more tokens that makes is measured per run: `token_ratio`).
    A stand-in for the self-verification of long chains of thought, not their thousands of tokens."""
    lines = []
    for line in chain.splitlines():
        lines.append(line)
        lines += [f"check: {check}" for check in map(_checked_backwards, arithmetic_steps(line)) if check]
    return "\n".join(lines)


def short_form(chain: str, rng: random.Random | None = None) -> str:
    """The short form: only the lines that compute (`cotlab.chains.prune_to_calculations`)."""
    return prune_to_calculations(chain)


# edit(chain, rng) -> chain: the structure/content edits, and two lengths of the same right chain.
CHAIN_FORMS = {**CHAIN_EDITS, "short": short_form, "long": with_checks}


def chain_datasets(gold_rows: list[dict], forms: list[str], seed: int = 0) -> dict[str, list[dict]]:
    """One SFT set per chain form, all from the same gold rows (`GoldTeacher().rationales`):
    the same questions and answers in the same order, only the chain differs.  A row that some
    form cannot edit (no arithmetic step to corrupt) is dropped from every set, so they stay matched."""
    unknown = [f for f in forms if f not in CHAIN_FORMS]
    if unknown:
        raise CotlabError(f"unknown chain form(s) {', '.join(unknown)}: choose from {', '.join(CHAIN_FORMS)}")
    rngs = {form: random.Random(f"{seed}:{form}") for form in forms}
    kept = []
    for row in gold_rows:
        try:
            kept.append((row, {form: CHAIN_FORMS[form](row["rationale"], rngs[form]) for form in forms}))
        except CotlabError:
            continue
    if not kept:
        raise CotlabError("no gold row could be edited into every chain form")
    return {form: [sft_example(row["question"], chains[form], row["answer"], source_id=row["source_id"], final_answer=row["answer"],
                               form=form) for row, chains in kept] for form in forms}


def check_matched(datasets: dict[str, list[dict]]) -> int:
    """Raise unless every set has the same prompts and answers in the same order; the row count."""
    sets = list(datasets.items())
    first_name, first = sets[0]
    for name, rows in sets[1:]:
        same = len(rows) == len(first) and all(r["prompt"] == f["prompt"] and r["final_answer"] == f["final_answer"] for r, f in zip(rows, first))
        if not same:
            raise CotlabError(f"chain sets {name} and {first_name} do not hold the same questions and answers")
    return len(first)


def changed_fraction(rows: list[dict], reference: list[dict]) -> float:
    """The share of rows whose completion differs from the reference set's (an edit that cannot
    change a chain, like wrong numbers on '0 × 0 = 0', leaves it as it was)."""
    return sum(r["completion"] != g["completion"] for r, g in zip(rows, reference)) / len(reference)


def token_ratio_sentence(train_tokens: dict[str, int], form: str = "long", reference: str = "gold") -> str:
    """How many more tokens one chain form trained on than the reference, from the runs' own
    `train_tokens` (metrics.json): the lesson's 'how long is long' is measured, never assumed."""
    if form not in train_tokens or reference not in train_tokens:
        raise CotlabError(f"token_ratio_sentence needs train_tokens of {form} and {reference}, got {', '.join(train_tokens) or 'none'}")
    if train_tokens[reference] <= 0:
        raise CotlabError(f"{reference} trained on no tokens: no ratio to print")
    ratio = train_tokens[form] / train_tokens[reference]
    return (f"{form} trained on {train_tokens[form]} tokens, {reference} on {train_tokens[reference]}: "
            f"{ratio:.2f} times the tokens, at the same steps and rows")


def _p_used(comparison: dict) -> float:
    """The Holm-adjusted p when the comparison is one of a family (`stats.with_holm`), else the raw p."""
    return comparison.get("p_holm", comparison["p_value"])


def _worse(comparison: dict, alpha: float) -> bool:
    return _p_used(comparison) < alpha and comparison["wins"] < comparison["losses"]


def _cost(edit: str, comparison: dict) -> str:
    holm = f", Holm {comparison['p_holm']:.2g}" if "p_holm" in comparison else ""
    return f"{edit} {comparison['difference']:+.0%} (p = {comparison['p_value']:.2g}{holm})"


def structure_verdict(comparisons: dict[str, dict], alpha: float = 0.05) -> str:
    """'Structure, not content?' from compare_paired results of each edit (A) against gold (B)
    on the same questions: does breaking the content (wrong_numbers) cost accuracy, does
    breaking the structure (shuffled, deleted), and which, beyond noise.  Pass the family through
    `stats.with_holm` and the verdict follows the Holm-adjusted p-values (both printed).  A cost
    not detected is reported as absence of evidence at this sample size, never as 'no cost': a
    few dozen questions cannot show that an edit is harmless, so the paper's 'content does not
    matter' half is never claimed as reproduced."""
    content = comparisons.get("wrong_numbers")
    structure = {e: comparisons[e] for e in ("shuffled", "deleted") if e in comparisons}
    if content is None or not structure:
        return "Structure against content needs a wrong_numbers run and a shuffled or deleted run beside gold."
    broken = [e for e, c in structure.items() if _worse(c, alpha)]
    costs = ", ".join(_cost(e, c) for e, c in {"wrong_numbers": content, **structure}.items())
    unseen = "(absence of evidence at this sample size, not evidence of no cost)"
    if broken and not _worse(content, alpha):
        return (f"Broken structure cost accuracy beyond noise here ({' and '.join(broken)}); a cost of wrong numbers was not "
                f"detected {unseen}. That matches the structure half of *LLMs Can Easily Learn to Reason from Demonstrations*; "
                f"its content half is not tested by a non-detection (vs gold: {costs}).")
    if broken:
        return f"Both mattered here: wrong numbers and {' and '.join(broken)} each cost accuracy beyond noise (vs gold: {costs})."
    if _worse(content, alpha):
        return (f"Unlike *LLMs Can Easily Learn to Reason from Demonstrations*, wrong numbers cost accuracy beyond noise here; "
                f"a cost of broken structure was not detected {unseen} (vs gold: {costs}).")
    return f"No edit's cost was detected at this sample size {unseen} (vs gold: {costs})."
