"""Lesson 06, test-time scaling: pass@k (best of N with the verifier) and maj@k (self-consistency,
*Self-Consistency Improves Chain of Thought Reasoning in Language Models*) against tokens spent."""

from __future__ import annotations

import random

from cotlab import CotlabError
from cotlab.evaluate import majority_vote, pass_at_k
from cotlab.stats import accuracy_phrase, paired_winner, verdict_with_mde


def majority_rows(rows: list[dict], k: int) -> list[dict]:
    """Per question, whether the majority vote of its FIRST k samples is right ({"id", "correct"}):
    one fixed vote per question, so maj@k becomes a count with a Wilson interval and two stages
    can be compared question by question (k=1 is the first sample alone)."""
    out = []
    for row in rows:
        samples = row["samples"][:k]
        correct_by_prediction = {s["prediction"]: s["correct"] for s in row["samples"]}
        vote = majority_vote([s["prediction"] for s in samples])
        out.append({"id": row["id"], "correct": bool(correct_by_prediction.get(vote))})
    return out


def scaling_curve(rows: list[dict], ks: list[int], subsets: int = 20, seed: int = 0) -> list[dict]:
    """pass@k (best-of-N with a perfect verifier), maj@k (self-consistency, *Self-Consistency
    Improves Chain of Thought Reasoning in Language Models*) and tokens spent per question, from
    rows evaluated with n ≥ max(ks) samples.  pass@k uses the unbiased estimator; maj@k averages
    the majority vote over random size-k subsets of the n samples.  Beside these smooth estimates
    each point counts, over the FIRST k samples, the questions with any right answer
    (`pass_count`) and with a right majority (`maj_count`) out of `n`: whole counts, so they
    carry Wilson intervals."""
    if not rows or "samples" not in rows[0]:
        raise CotlabError("scaling_curve needs rows evaluated with k > 1 samples (a 'samples' list per row)")
    n = min(len(r["samples"]) for r in rows)
    if max(ks) > n:
        raise CotlabError(f"k={max(ks)} needs at least {max(ks)} samples per question; the rows have {n}")
    rng = random.Random(seed)
    curve = []
    for k in ks:
        pass_k = maj_k = 0.0
        for row in rows:
            samples = row["samples"]
            pass_k += pass_at_k(len(samples), sum(s["correct"] for s in samples), k)
            correct_by_prediction = {s["prediction"]: s["correct"] for s in samples}
            votes = 0
            for _ in range(subsets if k < len(samples) else 1):
                chosen = rng.sample(samples, k)
                votes += bool(correct_by_prediction.get(majority_vote([s["prediction"] for s in chosen])))
            maj_k += votes / (subsets if k < len(samples) else 1)
        mean_tokens = sum(s["tokens"] for row in rows for s in row["samples"]) / sum(len(r["samples"]) for r in rows)
        curve.append({"k": k, "pass": pass_k / len(rows), "maj": maj_k / len(rows), "tokens": k * mean_tokens,
                      "n": len(rows), "pass_count": sum(any(s["correct"] for s in r["samples"][:k]) for r in rows),
                      "maj_count": sum(r["correct"] for r in majority_rows(rows, k))})
    return curve


def scaling_sentence(stage: str, curve: list[dict]) -> str:
    """One stage's test-time scaling in counts with Wilson intervals: one sample, the majority of
    the most samples, any of them right (the verifier's ceiling), and the token cost."""
    first, last = curve[0], curve[-1]
    n = last["n"]
    return (f"{stage}: majority of {first['k']} {accuracy_phrase(first['maj_count'], n)}; majority of {last['k']} "
            f"{accuracy_phrase(last['maj_count'], n)}; any of {last['k']} right (a perfect verifier) "
            f"{accuracy_phrase(last['pass_count'], n)}; {last['tokens'] / first['tokens']:.0f}x the tokens "
            f"({first['tokens']:.0f} -> {last['tokens']:.0f} per question)")


def sampling_vs_training_sentence(comparison: dict | None, alpha: float = 0.05) -> str:
    """Tuned model, one sample (A) against the base model's majority vote (B) on the same
    questions: 'sampling more beat training' only when the exact McNemar test says the base
    vote wins; 'did not make up for it' only when the tuned sample wins; otherwise no claim.  The
    test's minimum detectable effect is beside it; None (no base and tuned stage both sampled)
    says the comparison was not measured."""
    if comparison is None:
        return "Not measured: this run did not sample both the base model and a tuned stage, so sampling is not set against training."
    verdict, winner = verdict_with_mde(comparison, alpha), paired_winner(comparison, alpha)
    if winner:
        return f"Sampling more beat training here: {verdict}." if winner == "b" else f"Sampling more did not make up for training: {verdict}."
    return f"Neither sampling more nor training is ahead beyond noise on these questions: {verdict}."
