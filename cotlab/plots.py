"""Figures drawn from run data, saved as PNG beside the executed notebook."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt


def bars(ax, labels, values, errors=None, ylabel="", title=""):
    positions = range(len(labels))
    ax.bar(positions, values, yerr=errors, capsize=4, color="#4C72B0")
    ax.set_xticks(list(positions), labels, rotation=15)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    for x, v in zip(positions, values):
        ax.annotate(f"{v:.2f}" if v < 10 else f"{v:.0f}", (x, v), ha="center", va="bottom", fontsize=8)
    return ax


def accuracy_and_length(labels, accuracy, stderr, lengths, title: str, path: str | Path | None = None):
    """Two panels: accuracy with ±1 standard error, and mean completion tokens."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.5))
    bars(left, labels, accuracy, stderr, "accuracy", title)
    left.set_ylim(0, 1)
    bars(right, labels, lengths, None, "mean completion tokens", "length")
    fig.tight_layout()
    if path:
        fig.savefig(path, dpi=110)
    return fig


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
