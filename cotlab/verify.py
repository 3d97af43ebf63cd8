"""Answer extraction and checking.

Extraction has two readings.  The *strict* one credits only an answer the completion commits to:
a closed ``<answer>…</answer>`` tag, a ``####`` line, ``\\boxed{…}`` (or ``\\fbox``), or an
``Answer:`` / ``the (final) answer is`` phrase.  The *lenient* one also accepts an unclosed answer
tag and, failing everything else, the last number in the text: that fallback credits untagged or
cut-off completions whose last number merely happens to be right, so accuracies and rewards use the
strict reading and report the lenient one beside it (as *Let's Verify Step by Step* and the MATH
harnesses grade only the committed final answer).

Checking uses the reasoning-gym task's own scorer for ``rg:`` records and math-verify otherwise,
with a fast exact/numeric comparison first.
"""

from __future__ import annotations

import re
from functools import lru_cache

ANSWER_TAG = re.compile(r"<answer>\s*(.*?)\s*(?:</answer>|$)", re.DOTALL | re.IGNORECASE)
CLOSED_ANSWER_TAG = re.compile(r"<answer>\s*(.*?)\s*</answer>", re.DOTALL | re.IGNORECASE)
HASHES = re.compile(r"####\s*([^\n]+)")
ANSWER_PHRASE = re.compile(r"(?:final answer|the answer|answer)\s*\**\s*(?:is\s*:?|:|=)\s*\**\s*([^\n]+)", re.IGNORECASE)
NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?|-?\.\d+")
THINK_FORMAT = re.compile(r"^\s*<think>(.+?)</think>\s*<answer>(.+?)</answer>\s*$", re.DOTALL)
BOX_COMMAND = re.compile(r"\\(?:boxed|fbox)(?![A-Za-z])")
THOUSANDS = re.compile(r"-?\d{1,3}(?:,\d{3})+(?:\.\d+)?")
WORD_ANSWER = re.compile(r"[^\W\d_][^\W\d_' -]*")


def last_boxed(text: str) -> str | None:
    """The content of the last ``\\boxed{…}`` or ``\\fbox{…}`` (nested braces kept), or of
    ``\\boxed 5``; None when there is none or the last one is cut off before its closing brace
    (an earlier box is an intermediate result, not the answer)."""
    matches = list(BOX_COMMAND.finditer(text or ""))
    if not matches:
        return None
    rest = text[matches[-1].end():]
    body = rest.lstrip()
    if not body.startswith("{"):
        token = re.match(r"\s+([^\s$]+)", rest)  # \boxed 5: the argument is the next token
        return token.group(1) if token else None
    depth = 0
    for j, char in enumerate(body):
        depth += {"{": 1, "}": -1}.get(char, 0)
        if depth == 0:
            return body[1:j]
    return None


def normalize(answer: str) -> str:
    """Strip what differs between equal answers: $ and \\( \\) delimiters, a trailing period,
    thousands separators (1,080 but not the pair 1,2), **bold**."""
    previous = None
    while answer != previous:
        previous = answer
        answer = answer.strip().strip("*").strip()
        answer = answer.removeprefix("$").removesuffix("$").strip()
        answer = answer.removeprefix("\\(").removesuffix("\\)").removeprefix("\\[").removesuffix("\\]")
        answer = answer.rstrip(".").strip()
    if THOUSANDS.fullmatch(answer):
        answer = answer.replace(",", "")
    return answer


def extract_answer(completion: str, strict: bool = False) -> str | None:
    """The final answer a completion commits to, or None if it gives none.

    strict: only a closed answer tag, ``####``, a box or an answer phrase counts; the lenient
    reading (the default, kept for callers that mine any usable answer) also takes an unclosed
    answer tag and, last, the last number in the text."""
    if not completion:
        return None
    tagged = (CLOSED_ANSWER_TAG if strict else ANSWER_TAG).findall(completion)
    if tagged and tagged[-1].strip():
        return normalize(tagged[-1])
    hashes = HASHES.findall(completion)
    if hashes:
        return normalize(hashes[-1])
    boxed = last_boxed(completion)
    if boxed is not None:
        return normalize(boxed)
    phrases = ANSWER_PHRASE.findall(completion)
    if phrases:
        phrase = phrases[-1].strip()
        # "The answer is 42 apples." → 42: keep the number when the phrase leads with one.
        lead = NUMBER.match(phrase.lstrip("$ "))
        return normalize(lead.group(0) if lead else phrase)
    numbers = NUMBER.findall(completion)
    if numbers and not strict:
        return normalize(numbers[-1])
    return None


def format_ok(completion: str) -> bool:
    """True when the completion is exactly `<think>…</think>` then `<answer>…</answer>`."""
    return bool(THINK_FORMAT.match(completion or ""))


def _as_number(text: str) -> float | None:
    try:
        return float(text)  # normalize() already dropped thousands separators; "1,2" is a pair
    except ValueError:
        return None


def same_word_answer(prediction: str, gold: str) -> bool:
    """True when the gold answer is a word or phrase (not a number or an expression) and the
    prediction says the same up to case and spacing: "yes" for "Yes", "New  York" for "new york".
    Exact-match scorers (reasoning-gym's default) would count those wrong, which measures
    capitalisation rather than reasoning."""
    gold = " ".join(gold.split())
    return bool(WORD_ANSWER.fullmatch(gold)) and " ".join(prediction.split()).casefold() == gold.casefold()


def answers_match(prediction: str | None, gold: str) -> bool:
    """Compare two answers: exact after normalising (case-blind for word answers), numerically,
    then with math-verify."""
    if prediction is None:
        return False
    prediction, gold = normalize(prediction), normalize(gold)
    if prediction == gold or same_word_answer(prediction, gold):
        return True
    p, g = _as_number(prediction), _as_number(gold)
    if p is not None and g is not None:
        return abs(p - g) <= 1e-6 * max(1.0, abs(g))
    from math_verify import parse, verify

    try:
        return bool(verify(parse(f"${gold}$"), parse(f"${prediction}$")))
    except Exception:  # math-verify raises on unparsable input; unparsable means not equal
        return False


@lru_cache(maxsize=None)
def reasoning_gym_scorer(task: str):
    import reasoning_gym

    return reasoning_gym.get_score_answer_fn(task)


def is_correct(record, prediction: str | None) -> bool:
    """Score a prediction for a Record: the task's own scorer for reasoning-gym, else answers_match."""
    if prediction is None:
        return False
    if same_word_answer(normalize(prediction), record.answer):
        return True
    if record.source.startswith("rg:"):
        task = record.source[3:].split("?")[0]
        entry = {"question": record.question, "answer": record.answer, "metadata": record.metadata}
        try:
            # gsm_symbolic's scorer gives 0.01 to a wrong but well-formed answer: only 1.0 is right.
            return reasoning_gym_scorer(task)(prediction, entry) >= 1.0
        except Exception:
            return answers_match(prediction, record.answer)
    return answers_match(prediction, record.answer)


def grade(record, completion: str) -> dict:
    """Both readings of one completion: `prediction`/`correct` (strict) and their lenient twins."""
    strict = extract_answer(completion, strict=True)
    lenient = extract_answer(completion)
    correct = is_correct(record, strict)
    return {"prediction": strict, "correct": correct, "prediction_lenient": lenient,
            "correct_lenient": correct if lenient == strict else is_correct(record, lenient)}
