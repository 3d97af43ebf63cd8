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
from cotlab.stats import across_seeds, pooled_paired  # noqa: F401  (pooled_paired: the notebook's test, from stats)

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
