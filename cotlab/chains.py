"""The lines of an arithmetic chain of thought: parse them, check them, shorten and lengthen them.

- `arithmetic_steps`, `check_steps`: every `a op b … = r` a chain states, checked exactly.  A
  chain whose answer is right can still compute wrongly on the way, and fine-tuning on it teaches
  the wrong step too (*Let's Verify Step by Step*).
- `chain_fault`, `chain_is_right`: the one whole-chain check every training row cotlab writes
  passes: it computes, every step is right, and its last computed value is the gold answer.
- `prune_to_calculations`: the teacher-free short form of *Long-Short Chain-of-Thought Mixture
  Supervised Fine-Tuning* (keep only the lines that compute), without eating the minus sign of a
  negative running total; `explain_steps`: a long form that says each step in words around it.
- `replace_spans`: the edits of lessons 05 and 10 (`cotlab.lessons.faithfulness`,
  `cotlab.lessons.chain_forms`) rewrite a chain's numbers in place with it.

Steps are found, not guessed: a step needs an '=' with a number on each side and at least one
operator on the left, so dates, ranges and list numbering are never steps.  Bracketed
expressions, powers and fractions written as results (`= 5/6`) are not parsed, and a number
right after such an expression never starts one, so they are never flagged either.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from fractions import Fraction

# A number as chains write them: -28, 3.5, 1,200, $12, -$4.50 (and the typographic minus −).
_NUMBER = re.compile(r"[-−]?\$?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?!\d)")
_OPERATOR = re.compile(r"[ \t]*([-−+*/×÷]|x(?=[ \t]*[-−$\d]))[ \t]*")
_EQUALS = re.compile(r"[ \t]*=[ \t]*")
_OPERATORS = {"+": "+", "-": "-", "−": "-", "*": "*", "×": "*", "x": "*", "/": "/", "÷": "/"}
# Where a step may not begin: inside a word or number, or inside a larger expression we cannot read.
_NOT_BEFORE = re.compile(r"(?:[\w.,$]|[+*/×÷^(][ \t]*)\Z")
_FRACTION_AFTER = re.compile(r"/\d")  # `= 5/6`: a result we do not read


@dataclass(frozen=True)
class Step:
    """One `a op b … = r` as written in a chain, with its numbers read exactly."""

    text: str
    start: int
    end: int
    operands: tuple[Fraction, ...]
    operators: tuple[str, ...]  # normalised to + - * /
    result: Fraction
    number_spans: tuple[tuple[int, int], ...]  # where each operand, then the result, stands in the chain

    @property
    def value(self) -> Fraction | None:
        """What the left side really is (normal precedence), or None for a division by zero."""
        return evaluate_expression(self.operands, self.operators)

    @property
    def is_right(self) -> bool:
        return self.value == self.result


def to_fraction(text: str) -> Fraction:
    return Fraction(text.replace("$", "").replace(",", "").replace("−", "-"))


def evaluate_expression(operands, operators) -> Fraction | None:
    terms, signs = [operands[0]], []
    for operator, operand in zip(operators, operands[1:]):
        if operator in "+-":
            terms.append(operand)
            signs.append(operator)
        elif operator == "*":
            terms[-1] *= operand
        elif operand == 0:
            return None
        else:
            terms[-1] /= operand
    total = terms[0]
    for sign, term in zip(signs, terms[1:]):
        total = total + term if sign == "+" else total - term
    return total


def _step_at(chain: str, first: re.Match) -> Step | None:
    """The step whose first operand is `first`, or None when none begins there."""
    spans, operators, pos = [first.span()], [], first.end()
    while (operator := _OPERATOR.match(chain, pos)) and (number := _NUMBER.match(chain, operator.end())):
        operators.append(_OPERATORS[operator.group(1)])
        spans.append(number.span())
        pos = number.end()
    equals = _EQUALS.match(chain, pos)
    result = _NUMBER.match(chain, equals.end()) if equals and operators else None
    if result is None or _FRACTION_AFTER.match(chain, result.end()):
        return None
    spans.append(result.span())
    values = tuple(to_fraction(chain[a:b]) for a, b in spans)
    return Step(chain[first.start():result.end()], first.start(), result.end(), values[:-1], tuple(operators),
                values[-1], tuple(spans))


def arithmetic_steps(chain: str) -> list[Step]:
    """Every arithmetic step the chain states, in order.  `3 + 5 = 8 + 2 = 10` is two steps; the
    second begins at the first one's result."""
    steps, pos = [], 0
    while first := _NUMBER.search(chain, pos):
        before = chain[max(0, first.start() - 16):first.start()]
        step = None if _NOT_BEFORE.search(before) else _step_at(chain, first)
        if step is None:
            pos = first.end()
            continue
        steps.append(step)
        pos = step.number_spans[-1][0]  # a chained `= r op c = s` goes on from r
    return steps


def check_steps(chain: str) -> list[str]:
    """The steps whose result is wrong, as written (empty when every step is right).  Exact: a
    rounded '1 / 3 = 0.33' counts as wrong, so a model is not taught that rounding is equality."""
    return [step.text for step in arithmetic_steps(chain) if not step.is_right]


# Why a chain is not right, as `chain_fault` names it; distillation counts its removals by these names.
NO_CALCULATION = "no calculation"
ARITHMETIC_ERROR = "arithmetic error"
LAST_VALUE_NOT_ANSWER = "last value ≠ answer"
ANSWER_NOT_A_NUMBER = "answer not a number"


def chain_fault(chain: str, answer: str) -> str | None:
    """Why the chain is not a right chain for the gold `answer`, or None when it is: it computes
    something, every step is right, and the last step's result is the answer (numerically:
    '1,200' and '1200.0' are the same).  The one whole-chain check every training row passes: a
    chain that states '58 + 26 = 84' and then 'the final answer is 118' reaches no 118 at all."""
    try:
        gold = to_fraction(answer.strip().rstrip("."))
    except ValueError:
        return ANSWER_NOT_A_NUMBER
    steps = arithmetic_steps(chain)
    if not steps:
        return NO_CALCULATION
    if not all(step.is_right for step in steps):
        return ARITHMETIC_ERROR
    return None if steps[-1].result == gold else LAST_VALUE_NOT_ANSWER


def chain_is_right(chain: str, answer: str) -> bool:
    """True when `chain_fault` finds nothing wrong."""
    return chain_fault(chain, answer) is None


def numbers_in(text: str) -> list[tuple[Fraction, int]]:
    """Every number the text writes, with where it starts."""
    return [(to_fraction(m.group()), m.start()) for m in _NUMBER.finditer(text)]


# The short form -----------------------------------------------------------------------------------

# A list bullet is a marker *followed by a space*; `-28 - 75 = -103` starts with a number, not a bullet.
_BULLET = re.compile(r"^(?:[-•*]|\d+[.)])\s+")


def prune_to_calculations(rationale: str) -> str:
    """A structure-preserving short form without a teacher (LS-Mixture): the lines that compute
    something (an '=' and a digit), in order, without their list bullets or numbering.  The
    whole rationale when no line computes."""
    lines = [_BULLET.sub("", line.strip()) for line in rationale.splitlines()]
    kept = [line for line in lines if "=" in line and re.search(r"\d", line)]
    return "\n".join(kept) if kept else rationale


# The long form --------------------------------------------------------------------------------------

_IN_WORDS = {"+": "Add {b} to {a}.", "-": "Subtract {b} from {a}.", "*": "Multiply {a} by {b}.", "/": "Divide {a} by {b}."}


def explain_steps(chain: str) -> str:
    """A long form of a chain (LS-Mixture's long side, written by template): an opening line, and
    each line that is one two-number step said in words before it and its result restated after
    it.  The words hold no '=' and the steps are kept as written, so `prune_to_calculations` gives
    the chain back and the long form is exactly as right as the chain: it adds tokens, not reasoning."""
    lines = ["Work through it one step at a time, keeping the running value."]
    for line in chain.splitlines():
        steps = arithmetic_steps(line)
        if len(steps) == 1 and len(steps[0].operands) == 2 and steps[0].text == line.strip():
            a, b, result = (line[start:end] for start, end in steps[0].number_spans)
            lines += [_IN_WORDS[steps[0].operators[0]].format(a=a, b=b), line, f"The running value is now {result}."]
        else:
            lines.append(line)
    return "\n".join(lines)


# Editing in place ---------------------------------------------------------------------------------


def replace_spans(chain: str, replacements: dict[tuple[int, int], str]) -> str:
    """The chain with each (start, end) span replaced by its text."""
    for (start, end), text in sorted(replacements.items(), reverse=True):
        chain = chain[:start] + text + chain[end:]
    return chain
