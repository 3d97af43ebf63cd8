"""Grade completions made anywhere (a vLLM server, an API model, another harness) against a task.

The completions file is JSONL with a ``completion`` per row and either the record's ``id`` (as the
data source gives it) or its ``question``.  Grading is the evaluation's own: strict and lenient
readings of the answer (see `cotlab.verify`), the same checker, the same predictions.jsonl and
summary.json, so a number from outside sits beside `cotlab eval`'s without a second grader.
"""

from __future__ import annotations

from pathlib import Path

from cotlab import CotlabError
from cotlab.evaluate import EvalResult, accuracy_summary, write_eval
from cotlab.io import read_jsonl
from cotlab.verify import format_ok, grade


def _question_key(question: str) -> str:
    return " ".join(question.split())


def match_completions(records, rows: list[dict], where: str = "completions") -> list[tuple]:
    """Pair each completion row with its record, by `id` or else by `question` (whitespace-blind);
    the first row that names no record, has no completion, or names a question an earlier row
    already answered, is an error.  One completion per question: k completions of one question
    are not k independent questions, and a Wilson interval over them would be too narrow; grade
    each set of samples as its own file."""
    by_id = {r.id: r for r in records}
    by_question = {_question_key(r.question): r for r in records}
    pairs, seen = [], {}
    for number, row in enumerate(rows, start=1):
        if not isinstance(row.get("completion"), str):
            raise CotlabError(f"{where}: row {number} has no 'completion' string")
        if "id" in row:
            record = by_id.get(str(row["id"]))
            name = f"id '{row['id']}'"
        elif isinstance(row.get("question"), str):
            record = by_question.get(_question_key(row["question"]))
            name = f"question '{row['question'][:60]}'"
        else:
            raise CotlabError(f"{where}: row {number} has neither 'id' nor 'question'")
        if record is None:
            example = f" (its ids look like '{records[0].id}')" if records else ""
            raise CotlabError(f"{where}: row {number} names {name}, which the data does not have{example}")
        if record.id in seen:
            raise CotlabError(f"{where}: row {number} answers {name} again (first in row {seen[record.id]}): "
                              "one completion per question; grade each set of samples as its own file")
        seen[record.id] = number
        pairs.append((record, row["completion"]))
    return pairs


def score_completions(records, rows: list[dict], where: str = "completions") -> EvalResult:
    """Grade completion rows against records: predictions and a summary like `evaluate`'s, plus
    `missing`: how many of the data's records no row answered (an accuracy over the answered ones
    alone would hide the questions left out)."""
    if not rows:
        raise CotlabError(f"{where}: no completions to score")
    graded = [{"id": record.id, "question": record.question, "gold": record.answer, **grade(record, completion),
               "completion": completion, "format_ok": format_ok(completion)}
              for record, completion in match_completions(records, rows, where)]
    summary = {**accuracy_summary(graded), "format_ok_ratio": sum(r["format_ok"] for r in graded) / len(graded),
               "missing": len({r.id for r in records} - {r["id"] for r in graded})}
    return EvalResult(graded, summary)


def score(data: str, completions: str | Path, out: str | Path, split: str | None = None, n: int | None = None,
          seed: int = 0) -> EvalResult:
    """Grade a completions file against a data spec and write predictions.jsonl + summary.json to
    `out` (never over an earlier evaluation).  The data is loaded as `cotlab eval` loads it: a file
    or hub split whole, a generator's test pool unless `split` says otherwise."""
    from cotlab.data import load_records, split_label

    if (Path(out) / "summary.json").exists():
        raise CotlabError(f"{out} already holds an evaluation (summary.json): choose another --out")
    records = load_records(data, n=n, split=split, seed=seed)
    result = score_completions(records, read_jsonl(completions), where=str(completions))
    write_eval(out, result, data=data, split=split_label(data, split), completions=str(completions), seed=seed)
    return result
