"""Answer extraction and checking.

Extraction tries, in order: an ``<answer>…</answer>`` tag, a ``####`` line, ``\\boxed{…}``, an
``Answer:`` / ``the answer is`` phrase, and finally the last number in the text.  Checking uses
the reasoning-gym task's own scorer for ``rg:`` records and math-verify otherwise, with a fast
exact/numeric comparison first.
"""

from __future__ import annotations

import re

ANSWER_TAG = re.compile(r"<answer>\s*(.*?)\s*(?:</answer>|$)", re.DOTALL | re.IGNORECASE)
HASHES = re.compile(r"####\s*([^\n]+)")
ANSWER_PHRASE = re.compile(r"(?:final answer|the answer|answer)\s*\**\s*(?:is\s*:?|:|=)\s*\**\s*([^\n]+)", re.IGNORECASE)
NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?|-?\.\d+")
THINK_FORMAT = re.compile(r"^\s*<think>(.+?)</think>\s*<answer>(.+?)</answer>\s*$", re.DOTALL)


def _boxed(text: str) -> str | None:
    start = text.rfind("\\boxed{")
    if start < 0:
        return None
    depth, i = 1, start + len("\\boxed{")
    for j in range(i, len(text)):
        depth += {"{": 1, "}": -1}.get(text[j], 0)
        if depth == 0:
            return text[i:j]
    return None


def normalize(answer: str) -> str:
    """Strip what differs between equal answers: $, trailing period, commas in numbers, **bold**."""
    answer = answer.strip().strip("*").strip()
    answer = answer.removeprefix("$").removesuffix("$").strip()
    answer = answer.rstrip(".").strip()
    if re.fullmatch(r"-?[\d,]+(\.\d+)?", answer):
        answer = answer.replace(",", "")
    return answer


def extract_answer(completion: str) -> str | None:
    """The final answer a completion commits to, or None if it gives none."""
    if not completion:
        return None
    tagged = ANSWER_TAG.findall(completion)
    if tagged and tagged[-1].strip():
        return normalize(tagged[-1])
    hashes = HASHES.findall(completion)
    if hashes:
        return normalize(hashes[-1])
    boxed = _boxed(completion)
    if boxed is not None:
        return normalize(boxed)
    phrases = ANSWER_PHRASE.findall(completion)
    if phrases:
        phrase = phrases[-1].strip()
        # "The answer is 42 apples." → 42: keep the number when the phrase leads with one.
        lead = NUMBER.match(phrase.lstrip("$ "))
        return normalize(lead.group(0) if lead else phrase)
    numbers = NUMBER.findall(completion)
    if numbers:
        return normalize(numbers[-1])
    return None


def format_ok(completion: str) -> bool:
    """True when the completion is exactly `<think>…</think>` then `<answer>…</answer>`."""
    return bool(THINK_FORMAT.match(completion or ""))


def _as_number(text: str) -> float | None:
    try:
        return float(text.replace(",", ""))
    except ValueError:
        return None


def answers_match(prediction: str | None, gold: str) -> bool:
    """Compare two answers: exact after normalising, numerically, then with math-verify."""
    if prediction is None:
        return False
    prediction, gold = normalize(prediction), normalize(gold)
    if prediction == gold:
        return True
    p, g = _as_number(prediction), _as_number(gold)
    if p is not None and g is not None:
        return abs(p - g) <= 1e-6 * max(1.0, abs(g))
    from math_verify import parse, verify

    try:
        return bool(verify(parse(f"${gold}$"), parse(f"${prediction}$")))
    except Exception:  # math-verify raises on unparsable input; unparsable means not equal
        return False


def is_correct(record, prediction: str | None) -> bool:
    """Score a prediction for a Record: the task's own scorer for reasoning-gym, else answers_match."""
    if prediction is None:
        return False
    if record.source.startswith("rg:"):
        from cotlab.data import parse_task_options, reasoning_gym_scorer

        task, _ = parse_task_options(record.source[3:])
        entry = {"question": record.question, "answer": record.answer, "metadata": record.metadata}
        try:
            # gsm_symbolic's scorer gives 0.01 to a wrong but well-formed answer: only 1.0 is right.
            return reasoning_gym_scorer(task)(prediction, entry) >= 1.0
        except Exception:
            return answers_match(prediction, record.answer)
    return answers_match(prediction, record.answer)
