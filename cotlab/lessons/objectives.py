"""Lesson 09, which GRPO objective?  Matched runs that change only the objective, repeated over seeds.

TRL's `loss_type` grpo (*DeepSeekMath*: a mean over each completion's tokens), dr_grpo
(*Understanding R1-Zero-Like Training: A Critical Perspective*: a constant normaliser, no length
bias), dapo (*DAPO: An Open-Source LLM Reinforcement Learning System at Scale*: a mean over every
token of the batch, TRL's default), bnpo (the same over the local batch), and GSPO's sequence-level
importance ratio (*Group Sequence Policy Optimization*).  `same_updates` says which of them TRL
computes identically under a given set-up, before any run.
"""

from __future__ import annotations

from cotlab import CotlabError
from cotlab.logs import logged
from cotlab.stats import across_seeds, pooled_paired, verdict_with_mde  # noqa: F401  (pooled_paired: the notebook's test, from stats)

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


def seed_difference_verdict(a: str, b: str, metric: str, values_a: list[float], values_b: list[float],
                            scale: float = 1.0, unit: str = "", confidence: float = 0.95) -> str:
    """A minus B on one metric, seed by seed (run i of A and run i of B share seed i): the mean
    difference with its Student t interval across seeds; a direction only when it excludes zero.
    Identical runs (every difference exactly 0) are said to be identical, not 'within noise'."""
    if len(values_a) != len(values_b) or not values_a:
        raise CotlabError(f"{a} and {b} need one value per seed each, got {len(values_a)} and {len(values_b)}")
    differences = [x - y for x, y in zip(values_a, values_b)]
    if all(d == 0 for d in differences):
        return (f"{a} vs {b} {metric}: identical on every seed (a difference of exactly 0 on all {len(differences)}), "
                f"so there is no noise to weigh: either these objectives make the same updates here or the runs are too "
                f"short for them to differ")
    summary = across_seeds(differences, confidence)
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


def objective_verdict(comparison: dict, twin: bool, alpha: float = 0.05) -> str:
    """pooled_paired's verdict with its minimum detectable effect and what each question's outcome
    is; `twin` when TRL computes both objectives' updates identically here (`same_updates`)."""
    a, b = comparison["a"], comparison["b"]
    note = "identical updates by construction here, so any difference is sampling noise: " if twin else ""
    return (f"{note}{verdict_with_mde(comparison, alpha)} (per question: seeds right out of {comparison['seeds']}, "
            f"{a} against {b}; {comparison['ties']} ties)")


def objective_figure(histories: dict[str, list[list[dict]]], keys: list[str], counts: dict[str, list[tuple[int, int]]], path=None):
    """One panel per logged metric (a faint line per seed, a bold one for their mean at each
    step) and a last panel of held-out accuracy: a dot per seed with its Wilson 95% interval
    (`counts`: each seed's (right, asked)), and a bar at the mean over seeds with its Student t
    interval across seeds when there are two or more."""
    import matplotlib.pyplot as plt

    from cotlab.plots import wilson_yerr

    keys = [k for k in keys if any(k in e for runs in histories.values() for h in runs for e in h)]
    fig, axes = plt.subplots(1, len(keys) + 1, figsize=(3.6 * (len(keys) + 1), 3.4), squeeze=False)
    for ax, key in zip(axes[0], keys):
        for i, (name, runs) in enumerate(histories.items()):
            series = [dict(zip(*logged(h, key))) for h in runs]
            for points in series:
                ax.plot(list(points), list(points.values()), color=f"C{i}", alpha=0.3, lw=0.8)
            steps = sorted(set.intersection(*(set(p) for p in series))) if series else []
            ax.plot(steps, [sum(p[s] for p in series) / len(series) for s in steps], color=f"C{i}", marker=".", label=name)
        ax.set(title=key, xlabel="step")
    accuracy = axes[0][-1]
    for i, (name, seeds) in enumerate(counts.items()):
        over_seeds = across_seeds([k / n for k, n in seeds])
        half = over_seeds["interval"][1] - over_seeds["mean"] if over_seeds["interval"] else None
        accuracy.bar(i, over_seeds["mean"], yerr=half, capsize=6, color=f"C{i}", alpha=0.4)
        offsets = [i + 0.25 * (j - (len(seeds) - 1) / 2) / max(1, len(seeds) - 1) for j in range(len(seeds))]
        accuracy.errorbar(offsets, [k / n for k, n in seeds], yerr=wilson_yerr(seeds), fmt="o", color=f"C{i}", capsize=3)
    accuracy.set_xticks(range(len(counts)), list(counts), rotation=15)
    accuracy.set(title="held-out accuracy", ylim=(0, 1),
                 ylabel="dots: each seed, 95% Wilson interval\nbar: mean, 95% t interval over seeds")
    if keys:
        axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    if path:
        fig.savefig(path, dpi=110)
    return fig
