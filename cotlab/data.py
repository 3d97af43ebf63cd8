"""Task data: one record schema from three kinds of source, named by one spec string.

- ``rg:NAME``: any reasoning-gym generator (procedural, seeded, with its own scorer).
- a path to a JSONL file in GSM8K format (``question``; ``answer`` ending in ``#### N``).
- ``hf:DATASET[:CONFIG][:SPLIT]``: a dataset on the Hugging Face hub (GSM8K-style fields).

Train/test splits are decided by a hash of the question text, not by position: the same
question always lands in the same split, whatever the seed, the pool size or the source order,
so train and test can never overlap, even across runs with different sizes.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path

from cotlab import CotlabError
from cotlab.io import read_jsonl

SPLITS = ("train", "test", "all")
TEST_FRACTION = 0.2


@dataclass
class Record:
    id: str
    question: str
    answer: str  # the gold final answer, as a string
    rationale: str | None = None  # a gold chain of thought, where the source has one
    source: str = ""
    metadata: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


def split_of(question: str, test_fraction: float = TEST_FRACTION) -> str:
    digest = hashlib.sha1(" ".join(question.split()).encode()).digest()
    bucket = int.from_bytes(digest[:4], "big") / 2**32
    return "test" if bucket < test_fraction else "train"


def load_records(spec: str, n: int | None = None, split: str = "test", seed: int = 0) -> list[Record]:
    """Load up to `n` records of one split from a source spec (see the module docstring)."""
    if n is not None and n <= 0:
        raise CotlabError(f"n must be a positive number of records, got {n}")
    if split not in SPLITS:
        raise CotlabError(f"unknown split '{split}': choose one of {', '.join(SPLITS)}")
    if spec.startswith("rg:"):
        return _reasoning_gym_records(spec[3:], n, split, seed)
    if spec.startswith("hf:"):
        records = _hub_records(spec)
    else:
        records = gsm8k_jsonl_records(spec)
    return _take(records, n, split, seed)


def _take(records: list[Record], n: int | None, split: str, seed: int) -> list[Record]:
    import random

    chosen, seen = [], set()
    for record in records:
        if record.question in seen or (split != "all" and split_of(record.question) != split):
            continue
        seen.add(record.question)
        chosen.append(record)
    random.Random(seed).shuffle(chosen)
    return chosen[:n] if n else chosen


# reasoning-gym ---------------------------------------------------------------------------------


def reasoning_gym_tasks() -> list[str]:
    import reasoning_gym

    return sorted(reasoning_gym.factory.DATASETS)


def _reasoning_gym_records(name: str, n: int | None, split: str, seed: int) -> list[Record]:
    import reasoning_gym

    task, options = parse_task_options(name)
    if task not in reasoning_gym.factory.DATASETS:
        raise CotlabError(f"unknown reasoning-gym task '{task}' (cotlab tasks lists the {len(reasoning_gym.factory.DATASETS)} known)")
    if n is None:
        n = 200
    pool_size = 1_000_000  # items are generated lazily by index: a large pool costs nothing
    try:
        dataset = reasoning_gym.create_dataset(task, size=pool_size, seed=seed, **options)
    except TypeError as e:
        raise CotlabError(f"bad option for reasoning-gym task '{task}': {e}") from None
    records, seen = [], set()
    # Scanning indices in order keeps this deterministic; the hash split decides membership.
    for index in range(pool_size):
        item = dataset[index]
        question = item["question"]
        if question in seen or (split != "all" and split_of(question) != split):
            continue
        seen.add(question)
        metadata = dict(item.get("metadata", {}))
        records.append(
            Record(
                id=f"{task}-{seed}-{index}",
                question=question,
                answer=str(item["answer"]),
                rationale=metadata.get("answer_cot") or scratchpad_rationale(task, metadata),
                source=f"rg:{name}",
                metadata=metadata,
            )
        )
        if len(records) >= n or index > 50 * n + 1000:
            break
    return records


def scratchpad_rationale(task: str, metadata: dict) -> str | None:
    """A worked solution for tasks whose generator knows one but does not write it out.

    chain_sum: evaluate left to right, one running total per line (the "scratchpad" of Nye et
    al., *Show Your Work: Scratchpads for Intermediate Computation with Language Models*).
    """
    if task != "chain_sum" or "expression" not in metadata:
        return None
    tokens = metadata["expression"].split()
    total, lines = int(tokens[0]), []
    for operator, operand in zip(tokens[1::2], tokens[2::2]):
        new_total = total + int(operand) if operator == "+" else total - int(operand)
        lines.append(f"{total} {operator} {operand} = {new_total}")
        total = new_total
    return "\n".join(lines)


def parse_task_options(name: str) -> tuple[str, dict]:
    """`chain_sum?min_terms=2&max_terms=3` → ("chain_sum", {"min_terms": 2, "max_terms": 3})."""
    task, _, query = name.partition("?")
    options = {}
    for pair in filter(None, query.split("&")):
        key, eq, value = pair.partition("=")
        if not eq:
            raise CotlabError(f"bad task option '{pair}' in 'rg:{name}': expected key=value")
        options[key] = _parse_scalar(value)
    return task, options


def _parse_scalar(value: str):
    for kind in (int, float):
        try:
            return kind(value)
        except ValueError:
            pass
    return {"true": True, "false": False}.get(value.lower(), value)


@lru_cache(maxsize=None)
def reasoning_gym_scorer(task: str):
    import reasoning_gym

    return reasoning_gym.get_score_answer_fn(task)


# GSM8K-format JSONL -------------------------------------------------------------------------------

_CALCULATOR = re.compile(r"<<[^>]*>>")


def parse_gsm8k_answer(answer: str) -> tuple[str | None, str]:
    """Split a GSM8K answer into (rationale, final answer): '... #### 1,234' → (..., '1234')."""
    if "####" not in answer:
        return None, answer.strip()
    rationale, _, final = answer.rpartition("####")
    # GSM8K rationales carry calculator annotations like <<48/2=24>>: not part of the reasoning text.
    rationale = _CALCULATOR.sub("", rationale).strip()
    return rationale or None, final.strip().replace(",", "")


def gsm8k_jsonl_records(path: str) -> list[Record]:
    file = Path(path).expanduser()
    if not file.is_file():
        raise CotlabError(f"data file not found: {path} (expected rg:TASK, hf:DATASET or a JSONL file)")
    records = []
    for number, row in enumerate(read_jsonl(file), start=1):
        question = row.get("question")
        if not isinstance(question, str) or not question.strip():
            raise CotlabError(f"{path}: record {number} has no 'question'")
        if "answer" not in row:
            raise CotlabError(f"{path}: record {number} has no 'answer'")
        rationale, final = parse_gsm8k_answer(str(row["answer"]))
        records.append(
            Record(
                id=str(row.get("id", f"{file.stem}-{number}")),
                question=question.strip(),
                answer=final,
                rationale=row.get("rationale", rationale),
                source=str(file),
                metadata={k: v for k, v in row.items() if k not in ("question", "answer", "rationale", "id")},
            )
        )
    return records


# Hugging Face hub ---------------------------------------------------------------------------------


def _hub_records(spec: str) -> list[Record]:
    """`hf:openai/gsm8k:main:train`; fields question/answer (GSM8K) or problem/solution (MATH)."""
    import datasets

    parts = spec[3:].split(":")
    name, config, split = parts[0], (parts[1] if len(parts) > 1 else None), (parts[2] if len(parts) > 2 else "train")
    try:
        rows = datasets.load_dataset(name, config, split=split)
    except Exception as e:  # the hub raises many types; the user needs only the first line
        raise CotlabError(f"cannot load '{spec}' from the hub: {str(e).splitlines()[0]}") from None
    records = []
    for index, row in enumerate(rows):
        question = row.get("question") or row.get("problem")
        answer = row.get("answer") if "answer" in row else row.get("solution")
        if not question or answer is None:
            raise CotlabError(f"'{spec}' row {index} has no question/answer (or problem/solution) fields")
        rationale, final = parse_gsm8k_answer(str(answer))
        records.append(Record(id=f"{name}-{split}-{index}", question=question, answer=final, rationale=rationale, source=spec))
    return records
