"""Task data: one record schema from three kinds of source, named by one spec string.

- ``rg:NAME``: any reasoning-gym generator (procedural, seeded, with its own scorer).
- a path to a JSONL file: GSM8K rows (``question``; ``answer`` ending in ``#### N``) or MATH rows
  (``problem``; ``solution``; an optional ``answer``, else the solution's last ``\\boxed{}``).
- ``hf:DATASET[:CONFIG][:SPLIT]``: a dataset on the Hugging Face hub, with the same fields.

Split rules that cannot surprise.  A source that is already a split (a JSONL file, a hub split
such as ``hf:openai/gsm8k:main:test``) is used whole and in its own order: a benchmark's test set
is the benchmark.  A hash split applies to pooled sources: reasoning-gym generators (test unless
train is asked for), or a file or hub split when ``split="train"``/``"test"`` is asked explicitly.
The hash is of the question text, not its position, so the same question always lands in the same
split whatever the seed, pool size or order; where a generator builds questions from templates
(gsm_symbolic's ``task_indices``) the template is hashed instead, so variants of one template
never straddle train and test (the leak *GSM-Symbolic* warns about).  `split_label` says which
rule applied, for outputs and summaries.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

from cotlab import CotlabError
from cotlab.io import read_jsonl
from cotlab.verify import last_boxed

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


def resolve_split(spec: str, split: str | None = None) -> str:
    """The split `load_records` applies: None means test for a generator, the whole of a given split."""
    if split is None:
        return "test" if spec.startswith("rg:") else "all"
    if split not in SPLITS:
        raise CotlabError(f"unknown split '{split}': choose one of {', '.join(SPLITS)}")
    return split


def training_split(spec: str) -> str | None:
    """The split a training stage draws questions from: a generator's hashed train side, or a
    file or hub split whole (it is already a training set)."""
    return "train" if spec.startswith("rg:") else None


def split_label(spec: str, split: str | None = None) -> str:
    """What the records are, for outputs and summary.json: "as given", "all" (a whole generator
    pool) or "hash:train" / "hash:test"."""
    split = resolve_split(spec, split)
    if split == "all":
        return "all" if spec.startswith("rg:") else "as given"
    return f"hash:{split}"


def load_records(spec: str, n: int | None = None, split: str | None = None, seed: int = 0) -> list[Record]:
    """Load up to `n` records from a source spec; `split` follows the module docstring's rules."""
    if n is not None and n <= 0:
        raise CotlabError(f"n must be a positive number of records, got {n}")
    split = resolve_split(spec, split)
    if spec.startswith("rg:"):
        return _reasoning_gym_records(spec[3:], n, split, seed)
    records = _hub_records(spec) if spec.startswith("hf:") else jsonl_records(spec)
    if split == "all":
        return records[:n] if n else records
    return _take(records, n, split, seed)


def _take(records: list[Record], n: int | None, split: str, seed: int) -> list[Record]:
    import random

    chosen, seen = [], set()
    for record in records:
        if record.question in seen or split_of(record.question) != split:
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
    except (TypeError, ValueError, AssertionError, KeyError) as e:
        # an unknown option is a TypeError; a config's validate() asserts (min_terms > max_terms)
        # or raises ValueError: either way the user's option is wrong, not cotlab
        raise CotlabError(f"bad option for reasoning-gym task '{task}' in 'rg:{name}': {type(e).__name__}: {e}") from None
    templates = getattr(dataset, "task_indices", None)  # gsm_symbolic, list_functions: one template per item
    records, seen = [], set()
    # Scanning indices in order keeps this deterministic; the hash split decides membership.
    for index in range(pool_size):
        split_key = f"{task}-template-{templates[index]}" if templates is not None else None
        if split_key and split != "all" and split_of(split_key) != split:
            continue  # decided before generating: a template's items all fall on one side
        item = dataset[index]
        question = item["question"]
        if question in seen or (split != "all" and not split_key and split_of(question) != split):
            continue
        seen.add(question)
        metadata = dict(item.get("metadata", {}))
        if templates is not None:
            metadata["template"] = templates[index]
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


def record_from_row(row: dict, where: str, default_id: str, source: str) -> Record:
    """One record from a GSM8K row (question, answer with '#### N') or a MATH row (problem,
    solution, optional answer: else the solution's last box is the gold and the solution the
    rationale).  `where` names the row in errors."""
    question = row.get("question") or row.get("problem")
    if not isinstance(question, str) or not question.strip():
        raise CotlabError(f"{where} has no 'question' (or 'problem')")
    if "solution" in row:
        solution = str(row["solution"])
        answer = str(row.get("answer") or "").strip() or last_boxed(solution)
        if answer is None:
            raise CotlabError(f"{where} has no 'answer' and its 'solution' has no \\boxed{{}} answer")
        rationale, final = solution.strip(), answer.strip()
    elif "answer" in row:
        rationale, final = parse_gsm8k_answer(str(row["answer"]))
    else:
        raise CotlabError(f"{where} has no 'answer' (or 'solution')")
    used = ("question", "problem", "answer", "solution", "rationale", "id")
    return Record(id=str(row.get("id") or row.get("unique_id") or default_id), question=question.strip(),
                  answer=final, rationale=row.get("rationale", rationale), source=source,
                  metadata={k: v for k, v in row.items() if k not in used})


def jsonl_records(path: str) -> list[Record]:
    file = Path(path).expanduser()
    if not file.is_file():
        raise CotlabError(f"data file not found: {path} (expected rg:TASK, hf:DATASET or a JSONL file)")
    return [record_from_row(row, f"{path}: record {number}", f"{file.stem}-{number}", str(file))
            for number, row in enumerate(read_jsonl(file), start=1)]


# Hugging Face hub ---------------------------------------------------------------------------------


def _hub_records(spec: str) -> list[Record]:
    """`hf:openai/gsm8k:main:test`, `hf:HuggingFaceH4/MATH-500:default:test`: GSM8K or MATH fields."""
    import datasets

    parts = spec[3:].split(":")
    name, config, split = parts[0], (parts[1] if len(parts) > 1 else None), (parts[2] if len(parts) > 2 else "train")
    try:
        rows = datasets.load_dataset(name, config, split=split)
    except Exception as e:  # the hub raises many types; the user needs only the first line
        raise CotlabError(f"cannot load '{spec}' from the hub: {str(e).splitlines()[0]}") from None
    return [record_from_row(dict(row), f"'{spec}' row {index}", f"{name}-{split}-{index}", spec)
            for index, row in enumerate(rows)]
