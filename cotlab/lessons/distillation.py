"""Lesson 01, distillation: the sentences its "What we saw" cell prints about self-teaching (rejection
sampling) and STaR's rationalisation (*STaR: Bootstrapping Reasoning With Reasoning*)."""

from __future__ import annotations

from cotlab.stats import accuracy_phrase, wilson_interval


def star_sentence(rescued: int, attempted: int) -> str:
    """STaR's rationalisation (*STaR: Bootstrapping Reasoning With Reasoning*) in this run: how
    many unsolved questions got a verified chain once the answer was given, never more than shown."""
    if attempted == 0:
        return "Every sampled question already had a verified chain: STaR had nothing to rationalise."
    if rescued == 0:
        return (f"STaR rationalised none of the {attempted} unsolved questions: even with the answer given, this model "
                "wrote no chain that reaches it and passes the filters.")
    return (f"STaR rationalised {rescued} of {attempted} unsolved questions ({accuracy_phrase(rescued, attempted)}): "
            "with the answer given, the model wrote a verified chain for them.")


def self_teaching_sentence(covered: int, questions: int) -> str:
    """How many sampled questions got at least one verified chain, with its Wilson interval; 'a
    poor teacher of itself' only when even the interval's upper end is below half the questions."""
    low, high = wilson_interval(covered, questions)
    share = accuracy_phrase(covered, questions)
    if high < 0.5:
        return (f"Self-distillation gave a verified chain for {covered} of {questions} questions ({share}): a small model is "
                "a poor teacher of itself here, as the distillation papers' use of much larger teachers suggests.")
    return f"Self-distillation gave a verified chain for {covered} of {questions} questions ({share})."
