"""cotlab score: completions made elsewhere, graded with the evaluation's own reader and checker."""

import json
import re

import pytest

from cotlab import CotlabError
from cotlab.data import load_records
from cotlab.score import score, score_completions

from conftest import FIXTURES, run_cli
from math_style import math_style_rows

GSM8K = str(FIXTURES / "gsm8k_sample.jsonl")


def write_rows(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture
def math_file(tmp_path):
    return write_rows(tmp_path / "math500_style.jsonl", [row for row, _ in math_style_rows()])


def test_reference_solutions_score_right_and_mismatched_ones_wrong(math_file, tmp_path):
    records = load_records(str(math_file))
    own = [{"id": r.id, "completion": r.rationale} for r in records]
    shifted = [{"id": r.id, "completion": records[(i + 1) % len(records)].rationale} for i, r in enumerate(records)]
    assert score_completions(records, own).summary["accuracy"] >= 0.97
    assert score_completions(records, shifted).summary["accuracy"] <= 0.10


def test_equivalent_answers_in_other_wordings_count(tmp_path):
    rows = [{"problem": "Half of one?", "solution": "$\\boxed{\\frac{1}{2}}$"},
            {"problem": "Angle?", "solution": "so $\\boxed{30^\\circ}$"},
            {"problem": "Which choice?", "solution": "\\boxed{\\text{(B)}}"},
            {"problem": "Where is x?", "solution": "\\boxed{(1, 2]}"},
            {"problem": "Root?", "solution": "\\boxed{\\frac{\\sqrt2}{2}}"}]
    records = load_records(str(write_rows(tmp_path / "m.jsonl", rows)))
    said = ["<answer>0.5</answer>", "The final answer is 30.", "The answer is B", "\\boxed{(1,2]}", "#### \\sqrt{2}/2"]
    result = score_completions(records, [{"question": r.question, "completion": c} for r, c in zip(records, said)])
    assert [row["correct"] for row in result.rows] == [True] * 5


def test_strict_and_lenient_accuracy_with_an_interval(tmp_path):
    records = load_records(GSM8K)
    completions = [{"id": records[0].id, "completion": f"<answer>{records[0].answer}</answer>"},
                   {"id": records[1].id, "completion": f"so it is {records[1].answer}"},  # untagged
                   {"question": "  " + records[2].question.replace(" ", "  "), "completion": "The answer is 0."}]
    result = score(GSM8K, write_rows(tmp_path / "c.jsonl", completions), tmp_path / "out")
    s = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert (s["n"], s["accuracy"], s["accuracy_lenient"]) == (3, pytest.approx(1 / 3), pytest.approx(2 / 3))
    assert s["missing"] == len(records) - 3 > 0  # the data's other questions had no completion: counted, not hidden
    assert 0 < s["interval"][0] < 1 / 3 < s["interval"][1] < 1 and s["split"] == "as given"
    assert [row["correct_lenient"] for row in result.rows] == [True, True, False]
    assert len((tmp_path / "out" / "predictions.jsonl").read_text().splitlines()) == 3
    with pytest.raises(CotlabError, match="already holds an evaluation"):
        score(GSM8K, tmp_path / "c.jsonl", tmp_path / "out")


@pytest.mark.parametrize("rows,message", [
    ([{"id": "gsm8k_sample-1", "completion": "1"}, {"id": "nope", "completion": "2"}], "row 2 names id 'nope', which the data does not have (its ids look like 'gsm8k_sample-1')"),
    ([{"question": "What is love?", "completion": "2"}], "row 1 names question 'What is love?'"),
    ([{"id": "gsm8k_sample-1"}], "row 1 has no 'completion'"),
    ([{"completion": "2"}], "row 1 has neither 'id' nor 'question'"),
    ([{"id": "gsm8k_sample-1", "completion": "1"}, {"id": "gsm8k_sample-2", "completion": "1"}, {"id": "gsm8k_sample-1", "completion": "2"}],
     "row 3 answers id 'gsm8k_sample-1' again (first in row 1): one completion per question"),
])
def test_unknown_or_incomplete_rows_are_named(tmp_path, rows, message):
    with pytest.raises(CotlabError, match=re.escape(message)):
        score(GSM8K, write_rows(tmp_path / "c.jsonl", rows), tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_cli_scores_a_completions_file(math_file, tmp_path):
    records = load_records(str(math_file))
    completions = write_rows(tmp_path / "c.jsonl", [{"id": r.id, "completion": r.rationale} for r in records[:20]])
    done = run_cli("score", "--data", str(math_file), "--completions", str(completions), "--out", str(tmp_path / "o"))
    assert done.returncode == 0, done.stderr
    assert "accuracy 1.000" in done.stdout and json.loads((tmp_path / "o" / "summary.json").read_text())["n"] == 20
    again = run_cli("score", "--data", str(math_file), "--completions", str(completions), "--out", str(tmp_path / "o"))
    assert again.returncode == 2 and "already holds an evaluation" in again.stderr
    (tmp_path / "bad.jsonl").write_text('{"id": "x", "completion": "1"}\n{broken\n')
    bad = run_cli("score", "--data", str(math_file), "--completions", str(tmp_path / "bad.jsonl"), "--out", str(tmp_path / "p"))
    assert bad.returncode == 2 and "bad.jsonl:2: malformed JSON" in bad.stderr and len(bad.stderr.strip().splitlines()) == 1
