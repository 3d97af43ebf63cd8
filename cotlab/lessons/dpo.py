"""Lesson 03, DPO on reasoning pairs: what the logged margins and log-probabilities say (the squeezing
effect of *Learning Dynamics of LLM Finetuning*: chosen and rejected log-probabilities both fall)."""

from __future__ import annotations

from cotlab.logs import halves


def _moved(pair: tuple[float, float] | None) -> str:
    if pair is None:
        return "was logged too few times to tell"
    first, second = pair
    return f"{'rose' if second > first else 'fell' if second < first else 'stayed'} ({first:.2f} -> {second:.2f})"


def squeezing_sentence(log_history: list[dict]) -> str:
    """Which way DPO moved the chosen and rejected chains' log-probabilities (first half of the
    logged steps against the second).  Both falling is what *Learning Dynamics of LLM Finetuning*
    calls the squeezing effect: the margin grows while the chosen chain also becomes less likely.
    Descriptive only: each logged value is one training batch's, successive ones are not
    independent, and no test stands behind the direction, so the sentence says so."""
    chosen, rejected = halves(log_history, "logps/chosen"), halves(log_history, "logps/rejected")
    text = f"log-probability of the chosen chains {_moved(chosen)}, of the rejected ones {_moved(rejected)}"
    if chosen and rejected and chosen[1] < chosen[0] and rejected[1] < rejected[0]:
        return (f"The {text} ({NO_TEST}): both fell, the pattern *Learning Dynamics of LLM Finetuning* calls the "
                "squeezing effect; a wider margin here would not mean the right chains became more likely.")
    if chosen and rejected and chosen[1] > chosen[0] and rejected[1] < rejected[0]:
        return f"The {text} ({NO_TEST}): they moved apart, no sign of squeezing."
    return f"The {text}" + (f" ({NO_TEST})." if chosen and rejected else ".")


def margin_sentence(log_history: list[dict], pairs: int, gold_chosen: int) -> str:
    """The reward margin's first half against its second, and whose chains were separated: the
    model's own only when no chosen chain is a gold demonstration.  Descriptive (no test), like
    squeezing_sentence."""
    margins = halves(log_history, "rewards/margins")
    whose = ("its own right and wrong chains" if gold_chosen == 0 else
             f"right from wrong chains ({gold_chosen} of the {pairs} chosen chains are gold demonstrations, not its own)")
    if margins is None:
        return "The reward margin was logged too few times to tell a trend."
    first, second = margins
    moved = f"the mean reward margin went from {first:.3f} (first half) to {second:.3f} (second half)"
    if second > first:
        return f"Over training {moved} ({NO_TEST}): on the training pairs, the margin between {whose} widened."
    return f"Over training {moved} ({NO_TEST}): the margin between {whose} did not widen."


NO_TEST = "descriptive, no test: half-means of per-batch training logs"


def pairs_sentence(stats: dict, pair_mode: str) -> str:
    """How many training questions gave a pair, and what the pairs are made of (pairs_from_samples' stats)."""
    if not stats["pairs"]:
        return (f"None of the {stats['questions']} training questions gave a {pair_mode} pair: DPO has nothing to learn from "
                "(raise k or the temperature, or start from a stronger model).")
    lengths = f"chosen {stats['mean_chosen_tokens']:.0f} tokens vs rejected {stats['mean_rejected_tokens']:.0f}"
    return (f"{stats['pairs']} of {stats['questions']} training questions gave a {pair_mode} pair ({stats['gold_chosen']} with a gold "
            f"chosen chain, {stats['cut_off_excluded']} cut-off samples excluded; {lengths}).")
