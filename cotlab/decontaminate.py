"""Decontamination: find training rows that share a long word n-gram with an evaluation set.

An 8-word overlap is the test open-r1's decontaminate script applies to its training mixtures
(after *s1: Simple test-time scaling*): lower-cased text, word n-grams, any shared n-gram marks the
training row.  Words here are runs of letters and digits, so punctuation also splits ("apples." and
"apples" match), which open-r1's whitespace split would miss.  A shared 8-gram rarely happens by
chance in natural-language questions, so a hit means the evaluation question (or a paraphrase
close enough to share a phrase) is in the training data and the held-out accuracy would measure
memory.
"""

from __future__ import annotations

import re
from pathlib import Path

from cotlab import CotlabError

WORD = re.compile(r"\w+")


def words(text: str) -> list[str]:
    return WORD.findall(text.lower())


def ngrams(text: str, n: int = 8) -> set[tuple[str, ...]]:
    """Lower-cased word n-grams; a text shorter than n words is one gram of all its words."""
    tokens = words(text)
    if len(tokens) < n:
        return {tuple(tokens)} if tokens else set()
    return {tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1)}


def contaminated(train_texts: list[str], eval_texts: list[str], n: int = 8) -> list[int]:
    """Indices of the training texts that share a word n-gram with any evaluation text.  An
    evaluation text shorter than n words counts when a training text contains it whole."""
    if n <= 0:
        raise CotlabError(f"n-gram size must be positive, got {n}")
    seen = set().union(*(ngrams(text, n) for text in eval_texts))
    short = [f" {' '.join(tokens)} " for tokens in map(words, eval_texts) if 0 < len(tokens) < n]
    hits = []
    for index, text in enumerate(train_texts):
        joined = f" {' '.join(words(text))} "
        if ngrams(text, n) & seen or any(s in joined for s in short):
            hits.append(index)
    return hits


def row_text(row: dict) -> str:
    """The question a row asks: `question`/`problem`, or the user turn of a TRL prompt (a
    conversational list of messages or a plain string)."""
    for key in ("question", "problem"):
        if isinstance(row.get(key), str):
            return row[key]
    prompt = row.get("prompt")
    if isinstance(prompt, str):
        return prompt
    if isinstance(prompt, list):
        return "\n".join(m.get("content", "") for m in prompt if isinstance(m, dict) and m.get("role") == "user")
    messages = row.get("messages")
    if isinstance(messages, list):
        return "\n".join(m.get("content", "") for m in messages if isinstance(m, dict) and m.get("role") == "user")
    raise CotlabError("a row has none of question, problem, prompt or messages: cannot tell what it asks")


def load_texts(spec: str, split: str | None = None, n: int | None = None, seed: int = 0) -> tuple[list[str], list[dict] | None]:
    """(texts, rows) of a task spec or JSONL file; rows are the raw JSONL rows (None for a task spec)
    so that a clean copy keeps every field."""
    from cotlab.data import load_records
    from cotlab.io import read_jsonl

    if spec.startswith(("rg:", "hf:")):
        return [r.question for r in load_records(spec, n=n, split=split, seed=seed)], None
    if not Path(spec).expanduser().is_file():
        raise CotlabError(f"data file not found: {spec} (expected rg:TASK, hf:DATASET or a JSONL file)")
    rows = read_jsonl(Path(spec).expanduser())
    texts = []
    for number, row in enumerate(rows, start=1):
        try:
            texts.append(row_text(row))
        except CotlabError as e:
            raise CotlabError(f"{spec}: record {number}: {e}") from None
    return texts, rows
