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


def reward_summary(log_history: list[dict]) -> dict:
    """What a GRPO run's logs say about its learning signal: the mean total reward over the first
    and last half of the logged steps, the share of groups whose completions all got the same
    reward (no advantage, no gradient) and the share of completions cut off at max_completion_length."""
    first, last = halves(log_history, "reward") or (mean_logged(log_history, "reward"),) * 2
    return {"first_half": first, "last_half": last, "rewards": logged(log_history, "reward")[1],
            "frac_reward_zero_std": mean_logged(log_history, "frac_reward_zero_std"),
            "clipped_ratio": mean_logged(log_history, "completions/clipped_ratio")}


def reward_sentence(summary: dict) -> str:
    """The reward's trend (stats.trend_verdict over the logged steps), and what most often keeps it
    at 0: groups with no spread, and chains cut off before their answer."""
    from cotlab.stats import trend_verdict

    if summary["first_half"] is None:
        return "No reward was logged: the run took no logged step."
    lines = [trend_verdict(summary["rewards"], "mean total reward") + "."]
    zero, clipped = summary["frac_reward_zero_std"] or 0.0, summary["clipped_ratio"] or 0.0
    lines.append(f"{zero:.0%} of groups had zero reward spread" + (
        " (most groups gave no learning signal: every completion of a question scored alike)" if zero > 0.5 else " (no learning signal from those)"))
    lines.append(f"{clipped:.0%} of training completions hit max_completion_length" + (
        ": most chains were cut off before their answer, so correctness could not reward them; raise max_completion_length." if clipped > 0.5 else "."))
    return " ".join(lines[:1]) + " " + "; ".join(lines[1:])
