"""Verifiable rewards for GRPO, in TRL's reward-function signature.

TRL calls each function with the batch's `completions` (strings, or lists of chat messages),
`completion_ids`, and every dataset column as a keyword list (here `answer`, `source` and
`metadata_json`).  Each returns one float per completion.

- `correctness_reward`: 1 when the final answer verifies (the same verifier as evaluation), read
  strictly: a completion must commit to an answer (tag, box, ``####`` or "the answer is"); the last
  number of an untagged or cut-off completion earns nothing, or GRPO would learn to stop anywhere
  after a right-looking number.
- `format_reward`: 1 for exactly `<think>…</think><answer>…</answer>`, 0.5 for an answer tag alone.
- `length_reward`: the cosine length shaping of *Demystifying Long Chain-of-Thought Reasoning in
  LLMs*: among correct completions shorter earns more; among wrong ones longer earns more (keep
  thinking rather than guess); a completion cut off at the length limit earns the penalty.
"""

from __future__ import annotations

import json
import math

from cotlab import CotlabError
from cotlab.data import Record
from cotlab.verify import ANSWER_TAG, extract_answer, format_ok, is_correct


def completion_text(completion) -> str:
    """TRL passes a string for plain prompts and a list of messages for conversational ones."""
    if isinstance(completion, str):
        return completion
    return "".join(message.get("content", "") for message in completion)


def _record(answer: str, source: str | None, metadata_json: str | None) -> Record:
    return Record(id="", question="", answer=str(answer), source=source or "", metadata=json.loads(metadata_json or "{}"))


def correctness_reward(completions, answer, source=None, metadata_json=None, **_) -> list[float]:
    sources = source or [None] * len(completions)
    metadata = metadata_json or [None] * len(completions)
    return [float(is_correct(_record(a, s, m), extract_answer(completion_text(c), strict=True)))
            for c, a, s, m in zip(completions, answer, sources, metadata)]


def format_reward(completions, **_) -> list[float]:
    scores = []
    for completion in completions:
        text = completion_text(completion)
        scores.append(1.0 if format_ok(text) else 0.5 if ANSWER_TAG.search(text) and "</answer>" in text else 0.0)
    return scores


def cosine_length_reward(length: int, max_length: int, correct: bool, truncated: bool,
                         correct_short: float = 1.0, correct_long: float = 0.5,
                         wrong_short: float = -1.0, wrong_long: float = 0.0, truncated_penalty: float = -1.0) -> float:
    """Cosine interpolation between the value at length 0 and at max_length (Yeo et al., 2025)."""
    if truncated:
        return truncated_penalty
    start, end = (correct_short, correct_long) if correct else (wrong_short, wrong_long)
    progress = min(length, max_length) / max_length
    return end + 0.5 * (start - end) * (1 + math.cos(math.pi * progress))


def make_length_reward(max_length: int):
    """A length reward bound to the run's max_completion_length (TRL logs it by __name__)."""

    def length_reward(completions, completion_ids, answer, source=None, metadata_json=None, **_) -> list[float]:
        correct = correctness_reward(completions, answer, source, metadata_json)
        return [cosine_length_reward(len(ids), max_length, bool(c), truncated=len(ids) >= max_length)
                for ids, c in zip(completion_ids, correct)]

    return length_reward


def reward_functions(weights: dict[str, float], max_completion_length: int) -> tuple[list, list[float]]:
    """The reward functions with non-zero weight, and their weights, in TRL's order."""
    available = {"correctness": correctness_reward, "format": format_reward, "length": make_length_reward(max_completion_length)}
    unknown = sorted(set(weights) - set(available))
    if unknown:
        raise CotlabError(f"unknown reward(s) {', '.join(unknown)}: choose from {', '.join(available)}")
    chosen = [(available[name], float(w)) for name, w in weights.items() if w]
    if not chosen:
        raise CotlabError("every reward weight is zero: GRPO would have nothing to learn from")
    return [f for f, _ in chosen], [w for _, w in chosen]


def grpo_rows(records) -> list[dict]:
    """Prompt-only rows for GRPOTrainer: the think-format prompt plus what the rewards need."""
    from cotlab.prompts import build_messages

    return [{"prompt": build_messages(r.question, "think"), "answer": r.answer, "source": r.source,
             "metadata_json": json.dumps(r.metadata, default=str), "id": r.id} for r in records]
