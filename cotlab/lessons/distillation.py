"""Lesson 01, distillation: the sentences its "What we saw" cell prints, each from the run's own
numbers: what each filter removed, self-teaching (rejection sampling), STaR's rationalisation
(*STaR: Bootstrapping Reasoning With Reasoning*), the long/short mixture (*Long-Short
Chain-of-Thought Mixture Supervised Fine-Tuning*) and batched sampling."""

from __future__ import annotations

from cotlab.stats import accuracy_phrase, wilson_interval


def removed_phrase(removed: dict[str, int]) -> str:
    """'12 (8 wrong answer, 4 duplicate)', or 'none' when no filter removed anything."""
    total = sum(removed.values())
    if total == 0:
        return "none"
    return f"{total} ({', '.join(f'{n} {reason}' for reason, n in removed.items() if n)})"


def filter_sentence(name: str, card: dict) -> str:
    """What the filters did to one saved set, from its data card (`cotlab.distill.save_dataset`):
    how many candidate chains were kept and how many each filter removed."""
    removed = card.get("removed", {})
    candidates = card["rows"] + sum(removed.values())
    if not sum(removed.values()):
        return f"{name}: all {candidates} candidate chains passed every filter and were kept."
    return (f"{name}: {card['rows']} of {candidates} candidate chains kept; the filters removed "
            f"{removed_phrase(removed)}.")


def sampling_sentence(model: str, correct_rate: dict, acceptance: dict, kept: int, removed: dict[str, int]) -> str:
    """Right answers against accepted chains at each temperature (the cost of the chain filters),
    and how many samples each filter removed (`cotlab.distill.removal_counts`)."""
    rates = ", ".join(f"at T={t} {correct_rate[t]:.1%} of samples answered right and {acceptance[t]:.1%} were accepted"
                      for t in acceptance)
    return (f"Self-distillation from {model}: {rates}; {kept} chains kept by rejection sampling; of all samples drawn "
            f"(rejection sampling and STaR), the filters removed {removed_phrase(removed)}.")


def star_sentence(rescued: int, attempted: int) -> str:
    """STaR's rationalisation (*STaR: Bootstrapping Reasoning With Reasoning*) in this run: how
    many unsolved questions got a verified chain once the answer was given, never more than shown."""
    if attempted == 0:
        return "Every sampled question already had a verified chain: STaR had nothing to rationalise."
    if rescued == 0:
        return (f"STaR rationalised none of the {attempted} unsolved questions: even with the answer given, this model "
                "wrote no chain that computes it and passes the filters.")
    return (f"STaR rationalised {rescued} of {attempted} unsolved questions ({accuracy_phrase(rescued, attempted)}): "
            "with the answer given, the model wrote a chain that computes it, right step by step.")


def self_teaching_sentence(covered: int, questions: int) -> str:
    """How many sampled questions got at least one verified chain, with its Wilson interval; 'a
    poor teacher of itself' only when even the interval's upper end is below half the questions."""
    low, high = wilson_interval(covered, questions)
    share = accuracy_phrase(covered, questions)
    if high < 0.5:
        return (f"Self-distillation gave a verified chain for {covered} of {questions} questions ({share}): a small model is "
                "a poor teacher of itself here, as the distillation papers' use of much larger teachers suggests.")
    return f"Self-distillation gave a verified chain for {covered} of {questions} questions ({share})."


def mean_tokens(tokenizer, rows: list[dict]) -> float:
    """The mean length of the rows' chains in the tokenizer's tokens (0 for no rows)."""
    if not rows:
        return 0.0
    return sum(len(tokenizer(r["rationale"], add_special_tokens=False)["input_ids"]) for r in rows) / len(rows)


def mixture_sentence(long_count: int, short_count: int, mixed: list[dict], tokens: dict[str, float]) -> str:
    """The long/short mixture as built: how many long chains got a verified short form, the short
    share of the mixed set, and the measured mean tokens of long, short and mixed chains
    (`tokens`).  Whether the mixture trains better is not measured here, and the sentence says so."""
    shorts = sum(r["method"].endswith("+short") for r in mixed)
    later = ("Accuracy after SFT on long against short against mixed chains is the gpu profile's comparison "
             "(train notebook 02 on the saved long, short and mixed sets); it is not measured here.")
    if shorts == 0:
        return (f"The mixture is not a mixture here: {short_count} of {long_count} long chains had a verified shorter form, "
                f"so all {len(mixed)} mixed rows are long chains (mean {tokens['long']:.0f} tokens). {later}")
    return (f"{shorts} of {len(mixed)} mixed rows ({shorts / len(mixed):.0%}) are short forms, each itself right step by "
            f"step ({short_count} of {long_count} long chains had one). Mean tokens per chain: long {tokens['long']:.0f}, "
            f"short {tokens['short']:.0f} ({tokens['short'] / tokens['long']:.0%} of long), mixed {tokens['mixed']:.0f}. {later}")


def batching_sentence(speed: dict[str, float], prompts: int) -> str:
    """Batched against one-at-a-time sampling: one timing each, so a ratio, not an interval."""
    return (f"Batched sampling ran {speed['batched'] / speed['one at a time']:.1f}x faster than one question at a time "
            f"(one timing of {prompts} prompts: a measurement, not an interval).")
