"""Reading a Trainer's `log_history`: the one helper every lesson uses for its training curves.

`logged` gives one metric's (steps, values) in step order; `mean_logged` and `halves` summarise that
same series, so every lesson reads the logs the same way.
"""

from __future__ import annotations


def logged(log_history: list[dict], key: str) -> tuple[list[int], list[float]]:
    """(steps, values) of one metric a Trainer logged (e.g. GRPO's `entropy`), in step order."""
    points = [(e["step"], float(e[key])) for e in log_history if key in e and "step" in e]
    return [s for s, _ in points], [v for _, v in points]


def halves(log_history: list[dict], key: str) -> tuple[float, float] | None:
    """Mean of a logged metric over the first and the second half of the steps that logged it."""
    values = logged(log_history, key)[1]
    if len(values) < 2:
        return None
    half = len(values) // 2
    return sum(values[:half]) / half, sum(values[half:]) / (len(values) - half)


def mean_logged(log_history: list[dict], key: str, last_fraction: float = 1.0) -> float | None:
    """The mean of a logged metric over the last `last_fraction` of its logged steps (None when
    it was never logged)."""
    values = logged(log_history, key)[1]
    if not values:
        return None
    tail = values[-max(1, round(last_fraction * len(values))):]
    return sum(tail) / len(tail)
