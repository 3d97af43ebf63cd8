"""Lesson 10, what in a chain teaches?  SFT sets built from the same gold rows with only the chain changed.

After *LLMs Can Easily Learn to Reason from Demonstrations: Structure, not content, is what
matters!*: gold chains against wrong intermediate numbers, shuffled and deleted steps and no chain at
all; plus a longer, self-checking form and a shorter one for *Through the Valley: Path to Effective
Long CoT Training for Small Language Models*.

Every row carries its `form` and `deliberately_wrong`: true for the wrong_numbers, shuffled and
deleted controls (`DELIBERATELY_WRONG`), which never go through `cotlab.distill.save_dataset`
(it refuses a chain that fails the whole-chain check).  Every other form with a chain (gold, short,
long) passes `cotlab.chains.chain_is_right`, or its row leaves every set; answer_only has no chain
to check.
"""

from __future__ import annotations

import random
from fractions import Fraction

from cotlab import CotlabError
from cotlab.chains import (arithmetic_steps, chain_is_right, check_steps, evaluate_expression, prune_to_calculations,
                           replace_spans, to_fraction)
from cotlab.prompts import sft_example
from cotlab.stats import verdict_with_mde


def _format_like(value: Fraction, like: str) -> str:
    """`value` written the way `like` is: same decimals, thousands commas, '$' and minus sign."""
    decimals = len(like.partition(".")[2])
    digits = str(round(abs(value) * 10**decimals))
    if decimals:
        digits = digits.rjust(decimals + 1, "0")
        digits = digits[:-decimals] + "." + digits[-decimals:]
    if "," in like:
        whole, dot, fraction = digits.partition(".")
        digits = f"{int(whole):,}" + dot + fraction
    minus = ("−" if "−" in like else "-") if value < 0 else ""
    return minus + ("$" if "$" in like else "") + digits


def _nudged(value: Fraction, like: str, rng: random.Random, avoid: Fraction | None = None) -> str:
    """`value` moved by one to three units of its last written digit, never onto `avoid`."""
    unit = Fraction(1, 10 ** len(like.partition(".")[2]))
    return _format_like(value + rng.choice([k for k in (-3, -2, -1, 1, 2, 3) if value + k * unit != avoid]) * unit, like)


def unchanged(chain: str, rng: random.Random | None = None) -> str:
    """The gold chain itself (the control every edit is compared with)."""
    return chain


def wrong_numbers(chain: str, rng: random.Random) -> str:
    """Right form, wrong content: every intermediate result is moved by a small non-zero amount
    (so that its step is wrong) and the later operands that repeat it follow, so the chain still
    reads as a running computation; the last result (the final answer) stays.  A one-step chain gets a wrong operand
    instead.  `check_steps` flags every output, but for a lone step that no single operand
    changes (0 × 0 = 0), which comes back unchanged."""
    steps = arithmetic_steps(chain)
    if not steps:
        raise CotlabError("wrong_numbers needs a chain with at least one arithmetic step 'a op b = r'")
    if len(steps) == 1:
        for a, b in steps[0].number_spans[:-1]:  # the first operand whose change makes the step wrong (not 0 × 5)
            edited = replace_spans(chain, {(a, b): _nudged(to_fraction(chain[a:b]), chain[a:b], rng)})
            if check_steps(edited):
                return edited
    replacements, moved = {}, {}  # moved: an original intermediate result -> its new text
    for i, step in enumerate(steps):
        for span, operand in zip(step.number_spans, step.operands):
            if operand in moved:
                replacements.setdefault(span, moved[operand])
        if i < len(steps) - 1:  # a new result that the (possibly moved) operands do not give: every such step is wrong
            operands = [to_fraction(replacements.get((a, b), chain[a:b])) for a, b in step.number_spans[:-1]]
            a, b = step.number_spans[-1]
            moved[step.result] = replacements[(a, b)] = _nudged(step.result, chain[a:b], rng,
                                                                 avoid=evaluate_expression(operands, step.operators))
    return replace_spans(chain, replacements)


def _lines(chain: str) -> list[str]:
    return [line for line in chain.splitlines() if line.strip()]


def shuffled_steps(chain: str, rng: random.Random) -> str:
    """The same (non-blank) lines in another order; always another order when at least two of
    them differ."""
    lines = _lines(chain)
    shuffled = lines[:]
    rng.shuffle(shuffled)
    if shuffled == lines:
        shuffled = shuffled[1:] + shuffled[:1]  # a rotation equals the original only if all lines are equal
    return "\n".join(shuffled)


def deleted_steps(chain: str, rng: random.Random, fraction: float = 0.5) -> str:
    """The chain with round(fraction × lines) of its (non-blank) lines dropped at random, order
    kept; the last line, which reaches the answer, always stays."""
    if not 0 <= fraction <= 1:
        raise CotlabError(f"fraction must be in [0, 1], got {fraction}")
    lines = _lines(chain)
    dropped = set(rng.sample(range(len(lines) - 1), min(round(fraction * len(lines)), max(len(lines) - 1, 0))))
    return "\n".join(line for i, line in enumerate(lines) if i not in dropped)


def answer_only(chain: str, rng: random.Random | None = None) -> str:
    """No chain at all: the answer-only control."""
    return ""


# edit(chain, rng) -> chain, one matched SFT dataset per entry.
CHAIN_EDITS = {"gold": unchanged, "wrong_numbers": wrong_numbers, "shuffled": shuffled_steps,
               "deleted": deleted_steps, "answer_only": answer_only}


def _checked_backwards(step) -> str | None:
    """'15 - 43 = -28' -> '-28 + 43 = 15': the step undone, for a two-number step on whole numbers."""
    if len(step.operands) != 2:
        return None
    (a, b), result, operator = step.operands, step.result, step.operators[0]
    if b <= 0 or any(x.denominator != 1 for x in (a, b, result)):
        return None
    inverse = {"+": "-", "-": "+", "*": "/", "/": "*"}[operator]
    return f"{int(result)} {inverse} {int(b)} = {int(a)}"


def with_checks(chain: str, rng: random.Random | None = None) -> str:
    """The long form: after every line, each of its two-number steps undone as a check
    ('check: -28 + 43 = 15'), so the chain doubles its lines while every step stays right (how many
    more tokens that makes is measured per run: `token_ratio`).  When a check follows the last
    step, the last step is said again ('so -103 - 72 = -175'), so the chain still ends on the
    value it answers with (the whole-chain check).
    A stand-in for the self-verification of long chains of thought, not their thousands of tokens."""
    lines = []
    for line in chain.splitlines():
        lines.append(line)
        lines += [f"check: {check}" for check in map(_checked_backwards, arithmetic_steps(line)) if check]
    steps = arithmetic_steps(chain)
    if steps and arithmetic_steps("\n".join(lines))[-1].text != steps[-1].text:
        lines.append(f"so {steps[-1].text}")
    return "\n".join(lines)


def short_form(chain: str, rng: random.Random | None = None) -> str:
    """The short form: only the lines that compute (`cotlab.chains.prune_to_calculations`)."""
    return prune_to_calculations(chain)


# edit(chain, rng) -> chain: the structure/content edits, and two lengths of the same right chain.
CHAIN_FORMS = {**CHAIN_EDITS, "short": short_form, "long": with_checks}
# The controls that are wrong on purpose: their rows say so (`deliberately_wrong`), the rest are right.
DELIBERATELY_WRONG = ("wrong_numbers", "shuffled", "deleted")


def chain_datasets(gold_rows: list[dict], forms: list[str], seed: int = 0) -> dict[str, list[dict]]:
    """One SFT set per chain form, all from the same gold rows (`GoldTeacher().rationales`):
    the same questions and answers in the same order, only the chain differs.  A row that some
    form cannot edit (no arithmetic step to corrupt), or whose form meant to be right fails the
    whole-chain check, is dropped from every set, so they stay matched.  Each row says its `form`
    and whether it is `deliberately_wrong`."""
    unknown = [f for f in forms if f not in CHAIN_FORMS]
    if unknown:
        raise CotlabError(f"unknown chain form(s) {', '.join(unknown)}: choose from {', '.join(CHAIN_FORMS)}")
    rngs = {form: random.Random(f"{seed}:{form}") for form in forms}
    kept = []
    for row in gold_rows:
        try:
            chains = {form: CHAIN_FORMS[form](row["rationale"], rngs[form]) for form in forms}
        except CotlabError:
            continue
        if all(chain_is_right(chain, row["answer"]) for form, chain in chains.items() if form not in DELIBERATELY_WRONG and chain):
            kept.append((row, chains))
    if not kept:
        raise CotlabError("no gold row could be edited into every chain form")
    return {form: [sft_example(row["question"], chains[form], row["answer"], source_id=row["source_id"], final_answer=row["answer"],
                               form=form, deliberately_wrong=form in DELIBERATELY_WRONG) for row, chains in kept] for form in forms}


def check_matched(datasets: dict[str, list[dict]]) -> int:
    """Raise unless every set has the same prompts and answers in the same order; the row count."""
    sets = list(datasets.items())
    first_name, first = sets[0]
    for name, rows in sets[1:]:
        same = len(rows) == len(first) and all(r["prompt"] == f["prompt"] and r["final_answer"] == f["final_answer"] for r, f in zip(rows, first))
        if not same:
            raise CotlabError(f"chain sets {name} and {first_name} do not hold the same questions and answers")
    return len(first)


def changed_fraction(rows: list[dict], reference: list[dict]) -> float:
    """The share of rows whose completion differs from the reference set's (an edit that cannot
    change a chain, like wrong numbers on '0 × 0 = 0', leaves it as it was)."""
    return sum(r["completion"] != g["completion"] for r, g in zip(rows, reference)) / len(reference)


def token_ratio_sentence(train_tokens: dict[str, int], form: str = "long", reference: str = "gold") -> str:
    """How many more tokens one chain form trained on than the reference, from the runs' own
    `train_tokens` (metrics.json): the lesson's 'how long is long' is measured, never assumed."""
    if form not in train_tokens or reference not in train_tokens:
        raise CotlabError(f"token_ratio_sentence needs train_tokens of {form} and {reference}, got {', '.join(train_tokens) or 'none'}")
    if train_tokens[reference] <= 0:
        raise CotlabError(f"{reference} trained on no tokens: no ratio to print")
    ratio = train_tokens[form] / train_tokens[reference]
    return (f"{form} trained on {train_tokens[form]} tokens, {reference} on {train_tokens[reference]}: "
            f"{ratio:.2f} times the tokens, at the same steps and rows")


def _p_used(comparison: dict) -> float:
    """The Holm-adjusted p when the comparison is one of a family (`stats.with_holm`), else the raw p."""
    return comparison.get("p_holm", comparison["p_value"])


def _worse(comparison: dict, alpha: float) -> bool:
    return _p_used(comparison) < alpha and comparison["wins"] < comparison["losses"]


def _cost(edit: str, comparison: dict) -> str:
    holm = f", Holm {comparison['p_holm']:.2g}" if "p_holm" in comparison else ""
    return f"{edit} {comparison['difference']:+.0%} (p = {comparison['p_value']:.2g}{holm})"


def structure_verdict(comparisons: dict[str, dict], alpha: float = 0.05) -> str:
    """'Structure, not content?' from compare_paired results of each edit (A) against gold (B)
    on the same questions: does breaking the content (wrong_numbers) cost accuracy, does
    breaking the structure (shuffled, deleted), and which, beyond noise.  Pass the family through
    `stats.with_holm` and the verdict follows the Holm-adjusted p-values (both printed).  A cost
    not detected is reported as absence of evidence at this sample size, never as 'no cost': a
    few dozen questions cannot show that an edit is harmless, so the paper's 'content does not
    matter' half is never claimed as reproduced."""
    content = comparisons.get("wrong_numbers")
    structure = {e: comparisons[e] for e in ("shuffled", "deleted") if e in comparisons}
    if content is None or not structure:
        return "Structure against content needs a wrong_numbers run and a shuffled or deleted run beside gold."
    broken = [e for e, c in structure.items() if _worse(c, alpha)]
    costs = ", ".join(_cost(e, c) for e, c in {"wrong_numbers": content, **structure}.items())
    unseen = "(absence of evidence at this sample size, not evidence of no cost)"
    if broken and not _worse(content, alpha):
        return (f"Broken structure cost accuracy beyond noise here ({' and '.join(broken)}); a cost of wrong numbers was not "
                f"detected {unseen}. That matches the structure half of *LLMs Can Easily Learn to Reason from Demonstrations*; "
                f"its content half is not tested by a non-detection (vs gold: {costs}).")
    if broken:
        return f"Both mattered here: wrong numbers and {' and '.join(broken)} each cost accuracy beyond noise (vs gold: {costs})."
    if _worse(content, alpha):
        return (f"Unlike *LLMs Can Easily Learn to Reason from Demonstrations*, wrong numbers cost accuracy beyond noise here; "
                f"a cost of broken structure was not detected {unseen} (vs gold: {costs}).")
    return f"No edit's cost was detected at this sample size {unseen} (vs gold: {costs})."


def long_form_sentence(mean_tokens: dict[str, float], train_tokens: dict[str, int], comparison: dict, alpha: float = 0.05) -> str:
    """The long form against gold: tokens per answer, tokens trained on (`token_ratio_sentence`)
    and the paired verdict with its minimum detectable effect."""
    return (f"Long vs gold chains: {mean_tokens['long']:.0f} vs {mean_tokens['gold']:.0f} tokens per answer; "
            f"{token_ratio_sentence(train_tokens)}; {verdict_with_mde(comparison, alpha)}.")
