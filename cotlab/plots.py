"""Figures drawn from run data, saved as PNG beside the executed notebook."""

from __future__ import annotations

import warnings
from numbers import Integral
from pathlib import Path

import matplotlib.pyplot as plt

# Every accuracy bar or line carries its Wilson 95% interval, and the axis or title says so: a
# ±1 standard error bar has zero width at 0/n and n/n, exactly where a small evaluation lands.
WILSON = "bars: 95% Wilson intervals"


def bars(ax, labels, values, errors=None, ylabel="", title=""):
    positions = range(len(labels))
    ax.bar(positions, values, yerr=errors, capsize=4, color="#4C72B0")
    ax.set_xticks(list(positions), labels, rotation=15)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    for x, v in zip(positions, values):
        ax.annotate(f"{v:.2f}" if v < 10 else f"{v:.0f}", (x, v), ha="center", va="bottom", fontsize=8)
    return ax


def accuracy_and_length(labels, accuracy, counts, lengths, title: str, path: str | Path | None = None):
    """Two panels: accuracy with its Wilson 95% interval, and mean completion tokens.  `counts` is
    each accuracy's (right, asked); an `evidence.error_bars` result (already Wilson) is drawn as it
    is.  A flat list of standard errors (the old form) cannot become a Wilson interval (at 0/n it
    does not say n), so it is drawn with a warning and labelled ±1 s.e., never passed off as Wilson."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.5))
    errors, what = _accuracy_errors(counts)
    bars(left, labels, accuracy, errors, f"accuracy ({what})", title)
    left.set_ylim(0, 1)
    bars(right, labels, lengths, None, "mean completion tokens", "length")
    fig.tight_layout()
    if path:
        fig.savefig(path, dpi=110)
    return fig


def _accuracy_errors(counts) -> tuple[list, str]:
    """(matplotlib yerr, what the bars are) from accuracy_and_length's `counts` argument."""
    def is_count(item):
        return isinstance(item, (tuple, list)) and len(item) == 2 and all(isinstance(x, Integral) for x in item)

    if counts and all(is_count(item) for item in counts):
        return wilson_yerr([tuple(item) for item in counts]), WILSON
    if len(counts) == 2 and all(isinstance(side, (tuple, list)) for side in counts):
        return counts, WILSON  # evidence.error_bars: [below], [above] to each Wilson interval's ends
    warnings.warn("accuracy_and_length got standard errors: pass (right, asked) counts for Wilson 95% intervals", stacklevel=3)
    return counts, "bars: ±1 standard error, not Wilson"


def curves(log_history: list[dict], keys: list[str], title: str, path: str | Path | None = None):
    """Training curves (loss, rewards, margins…) from a Trainer's log_history, one panel per key."""
    keys = [k for k in keys if any(k in e for e in log_history)]
    columns = min(4, max(1, len(keys)))
    rows = -(-max(1, len(keys)) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(4 * columns, 3 * rows), squeeze=False)
    for ax in axes.flat[len(keys) :]:
        ax.axis("off")
    for ax, key in zip(axes.flat, keys):
        points = [(e["step"], e[key]) for e in log_history if key in e]
        ax.plot([p[0] for p in points], [p[1] for p in points], marker=".")
        ax.set_xlabel("step")
        ax.set_title(key, fontsize=9)
    fig.suptitle(title)
    fig.tight_layout()
    if path:
        fig.savefig(path, dpi=110)
    return fig


def training_curves(histories: dict[str, list[dict]], keys: dict[str, str], title: str, path: str | Path | None = None):
    """Several runs' training curves side by side: one panel per logged key (`keys` maps it to the
    panel's title), one line per run that logged it; a key no run logged gets no panel."""
    keys = {k: label for k, label in keys.items() if any(k in e for h in histories.values() for e in h)}
    fig, axes = plt.subplots(1, max(1, len(keys)), figsize=(4 * max(1, len(keys)), 3.2), squeeze=False)
    for ax, (key, label) in zip(axes[0], keys.items()):
        for i, (name, history) in enumerate(histories.items()):
            points = [(e["step"], e[key]) for e in history if key in e and "step" in e]
            if points:
                ax.plot([p[0] for p in points], [p[1] for p in points], marker=".", color=f"C{i}", label=name)
        ax.set_xlabel("step")
        ax.set_title(label, fontsize=9)
        ax.legend(fontsize=7)
    fig.suptitle(title)
    return _save(fig, path)


def grouped_bars(ax, groups: list[str], series: dict[str, list[float]], ylabel: str = "", title: str = ""):
    """One cluster of bars per group, one bar (and legend entry) per series."""
    width = 0.8 / max(1, len(series))
    for i, (label, values) in enumerate(series.items()):
        ax.bar([j + i * width for j in range(len(groups))], values, width, label=label)
    ax.set_xticks([j + width * (len(series) - 1) / 2 for j in range(len(groups))], groups)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(fontsize=7)
    return ax


def _save(fig, path):
    fig.tight_layout()
    if path:
        fig.savefig(path, dpi=110)
    return fig


def acceptance_and_coverage(logs: dict[float, list[dict]], k: int, path: str | Path | None = None):
    """Lesson 01: share of right and of accepted samples per temperature (left), and coverage,
    the share of questions with a right answer among the first j samples, for j = 1..k (right)."""
    temperatures = list(logs)
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.5))
    grouped_bars(left, [f"T={t}" for t in temperatures],
                 {rate.replace("_", " "): [sum(log[rate] for log in logs[t]) / len(logs[t]) for t in temperatures]
                  for rate in ("correct_rate", "acceptance")},
                 ylabel="share of samples", title="right answers and accepted chains vs temperature")
    for t in temperatures:
        coverage = [sum(any(s["correct"] for s in log["samples"][:j]) for log in logs[t]) / len(logs[t]) for j in range(1, k + 1)]
        right.plot(range(1, k + 1), coverage, marker="o", label=f"T={t}")
    right.set_xlabel("samples per question (k)")
    right.set_ylabel("questions covered")
    right.set_title("coverage vs k")
    right.legend()
    return _save(fig, path)


def length_histograms(rows_by_name: dict[str, list[dict]], path: str | Path | None = None):
    """Lesson 01: rationale length (words) of each non-empty training set, one histogram each."""
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for name, rows in rows_by_name.items():
        if rows:
            ax.hist([len(r["rationale"].split()) for r in rows], bins=20, alpha=0.5, label=f"{name} (n={len(rows)})", density=True)
    ax.set_xlabel("rationale length (words)")
    ax.set_ylabel("density")
    ax.set_title("rationale lengths")
    ax.legend()
    return _save(fig, path)


def pair_lengths(pairs: list[dict], title: str, path: str | Path | None = None):
    """Lesson 03: token lengths of the chosen and the rejected chains of the preference pairs."""
    fig, ax = plt.subplots(figsize=(6, 3))
    ax.hist([[p["chosen_tokens"] for p in pairs], [p["rejected_tokens"] for p in pairs]], bins=12, label=["chosen", "rejected"])
    ax.set_xlabel("completion tokens")
    ax.set_ylabel("pairs")
    ax.set_title(title)
    ax.legend()
    return _save(fig, path)


def wilson_yerr(counts: list[tuple[float, int]]) -> list[list[float]]:
    """evidence.error_bars (to each Wilson 95% interval), nan where nothing was measured (n = 0)."""
    from cotlab.evidence import error_bars

    sides = error_bars([(k, n) if n else (0, 1) for k, n in counts])
    return [[value if n else float("nan") for value, (_, n) in zip(side, counts)] for side in sides]


def wilson_yerr_of_means(means: list[float], n: int) -> list[list[float]]:
    """wilson_yerr of means over n questions of per-question values in [0, 1] (unbiased pass@k,
    maj@k over subsets), each taken as mean·n successes out of n.  Such a mean's variance is at most
    a proportion's, p(1 - p)/n, so the interval is if anything too wide, never too narrow."""
    return wilson_yerr([(min(n, max(0.0, m * n)), n) for m in means])


def accuracy_by_length_lines(length_bins: dict[str, list[dict]], path: str | Path | None = None):
    """Lesson 05: accuracy per equal-count length bin, one line per stage (or per stage and term
    count), each point with its Wilson 95% interval when the bins carry counts."""
    fig, ax = plt.subplots(figsize=(6.5, 3.8))
    for label, bins in length_bins.items():
        xs, ys = [(b["low"] + b["high"]) / 2 for b in bins], [b["accuracy"] for b in bins]
        counted = all("correct" in b and "n" in b for b in bins)
        ax.errorbar(xs, ys, yerr=wilson_yerr([(b["correct"], b["n"]) for b in bins]) if counted else None,
                    marker="o", capsize=3, label=label)
    ax.set_xlabel("completion tokens (bin centre)")
    ax.set_ylabel("accuracy (bars: Wilson 95% CI)")
    ax.set_title("accuracy by length within each term count (equal-count bins)")
    ax.legend(fontsize=7)
    return _save(fig, path)


def faithfulness_figure(curves: dict[str, list[dict]], probes: dict[str, dict], path: str | Path | None = None,
                        controls: dict[str, dict] | None = None):
    """Lesson 05: early-answering curves (one line per probe set) and the three probes' rates,
    every point and bar with its Wilson 95% interval.  A probe with nothing to measure (no chain
    the paraphrase changed, none with a result to corrupt) is left empty and marked 'not
    measured', never drawn as 0; a set whose positive control failed says so in its label."""
    controls = controls or {}

    def name(label):
        return label + (" (control failed)" if label in controls and not controls[label]["passed"] else "")

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 3.8))
    for label, curve in curves.items():
        counted = all("correct" in c for c in curve)
        yerr = wilson_yerr([(sum(c["correct"]), c["n"]) for c in curve]) if counted else None
        left.errorbar([c["fraction"] for c in curve], [c["accuracy"] for c in curve], yerr=yerr, marker="o", capsize=3,
                      label=name(label))
    left.set_xlabel("fraction of the chain kept (cut before its final result)")
    left.set_ylabel("accuracy of the read-out answer")
    left.set_title("early answering (bars: Wilson 95% CI)")
    left.legend(fontsize=7)
    names = list(probes)
    sets = [probes[n] for n in names]
    counts = {"answer follows corruption": [(p["corrupted"].get("changed", 0), p["corrupted"]["n"]) for p in sets],
              "accuracy with filler": [(p["filler"].get("correct", 0), p["n"]) for p in sets],
              "unchanged by paraphrase": [(p["paraphrased"].get("unchanged_count", 0), p["paraphrased"]["n"]) for p in sets]}
    width = 0.8 / len(counts)
    for i, (series, pairs) in enumerate(counts.items()):
        xs = [j + i * width for j in range(len(names))]
        rates = [k / n if n else float("nan") for k, n in pairs]
        right.bar(xs, rates, width, yerr=wilson_yerr(pairs), capsize=3, label=series)
        for x, (_, n) in zip(xs, pairs):
            if not n:
                right.annotate("not measured", (x, 0.02), rotation=90, ha="center", va="bottom", fontsize=6)
    right.set_xticks([j + width * (len(counts) - 1) / 2 for j in range(len(names))], [name(n) for n in names])
    right.set_ylabel("rate (bars: Wilson 95% CI)")
    right.set_title("probes")
    right.legend(fontsize=7)
    right.set_ylim(0, 1)
    right.tick_params(axis="x", rotation=15)
    return _save(fig, path)


def scaling_figure(scaling: dict[str, list[dict]], path: str | Path | None = None):
    """Lesson 06: pass@k and maj@k against k (left), maj@k against tokens spent (right), every
    point with the Wilson 95% interval of its mean over the curve's n questions."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 3.8))
    for stage, curve in scaling.items():
        ks, n = [c["k"] for c in curve], curve[0]["n"]
        passes, majorities = [c["pass"] for c in curve], [c["maj"] for c in curve]
        left.errorbar(ks, passes, yerr=wilson_yerr_of_means(passes, n), marker="o", capsize=3, label=f"{stage} pass@k (n={n})")
        left.errorbar(ks, majorities, yerr=wilson_yerr_of_means(majorities, n), marker="s", linestyle="--", capsize=3,
                      label=f"{stage} maj@k (n={n})")
        right.errorbar([c["tokens"] for c in curve], majorities, yerr=wilson_yerr_of_means(majorities, n), marker="s", capsize=3,
                       label=f"{stage} maj@k (n={n})")
    left.set_xscale("log", base=2)
    left.set_xlabel("samples k")
    left.set_ylabel(f"accuracy ({WILSON})")
    left.set_title("pass@k and maj@k")
    left.legend(fontsize=7)
    right.set_xlabel("tokens per question")
    right.set_ylabel(f"maj@k accuracy ({WILSON})")
    right.set_title("accuracy vs tokens spent")
    right.legend(fontsize=7)
    return _save(fig, path)


def update_sizes(by_layer: dict[str, dict], by_module: dict[str, dict], path: str | Path | None = None):
    """Lesson 07: each stage's relative LoRA update ||ΔW||/||W|| by layer (lines) and by module (bars)."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 3.5))
    for stage, values in by_layer.items():
        left.plot(list(values), list(values.values()), marker="o", label=stage)
    left.set_xlabel("layer")
    left.set_ylabel("relative update ||ΔW|| / ||W||")
    left.set_title("by layer (one run each: no interval)")
    left.legend()
    modules = sorted({m for values in by_module.values() for m in values})
    grouped_bars(right, modules, {stage: [values.get(m, 0) for m in modules] for stage, values in by_module.items()},
                 title="by module (one run each: no interval)")
    right.tick_params(axis="x", rotation=30)
    return _save(fig, path)


def gain_vs_forgetting(scored: list[dict], in_task: str, untrained: list[str], path: str | Path | None = None):
    """Lesson 07: along training, the in-task gold log-likelihood (x, the gain) against each
    untrained task's (y, forgetting when it falls), every point labelled with its step and, when
    the points keep their per-question `scores`, barred both ways with the 95% Student t interval
    of its mean over the questions (a mean log-probability, not a proportion: no Wilson interval)."""
    from cotlab.stats import across_seeds  # a t interval of a mean; here over questions, not seeds

    def yerr(task):
        if not all("scores" in point for point in scored):
            return None
        spans = [(point["mean"][task], across_seeds(point["scores"][task])["interval"]) for point in scored]
        return [[mean - i[0] if i else 0.0 for mean, i in spans], [i[1] - mean if i else 0.0 for mean, i in spans]]

    fig, ax = plt.subplots(figsize=(6, 4))
    xs = [point["mean"][in_task] for point in scored]
    for task in untrained:
        ys = [point["mean"][task] for point in scored]
        ax.errorbar(xs, ys, xerr=yerr(in_task), yerr=yerr(task), marker="o", capsize=3, label=task)
        for point, x, y in zip(scored, xs, ys):
            ax.annotate(point["label"], (x, y), fontsize=7, textcoords="offset points", xytext=(3, 3))
    ax.set_xlabel(f"{in_task}: gold answer log-prob per token (gain →)")
    ax.set_ylabel("untrained task: gold answer log-prob per token")
    ax.set_title("gain against forgetting over training" + ("\n(bars: 95% t intervals over the questions)" if yerr(in_task) else ""))
    ax.legend(fontsize=7)
    return _save(fig, path)
