import json

import pytest

from cotlab import CotlabError
from cotlab.data import load_records, parse_gsm8k_answer, parse_task_options, split_of

from conftest import CHAIN_SUM, FIXTURES


def test_gsm8k_answer_parsing_strips_commas_and_calculator_notes():
    rationale, final = parse_gsm8k_answer("48/2 = <<48/2=24>>24 clips.\n#### 1,080")
    assert final == "1080"
    assert rationale == "48/2 = 24 clips."


def test_gsm8k_jsonl_reads_every_gold_answer():
    records = load_records(str(FIXTURES / "gsm8k_sample.jsonl"), split="all")
    golds = {r.question[:20]: r.answer for r in records}
    assert sorted(golds.values()) == sorted(["72", "10", "5", "850000", "1080"])
    assert all(r.rationale and "<<" not in r.rationale for r in records)


def test_splits_are_deterministic_and_disjoint():
    train = load_records(CHAIN_SUM, n=200, split="train", seed=0)
    test = load_records(CHAIN_SUM, n=50, split="test", seed=0)
    assert len(train) == 200 and len(test) == 50
    assert not {r.question for r in train} & {r.question for r in test}
    assert all(split_of(r.question) == "test" for r in test)
    again = load_records(CHAIN_SUM, n=50, split="test", seed=0)
    assert [r.question for r in again] == [r.question for r in test]
    # Another seed draws other questions, but never a training question into test.
    other_seed = load_records(CHAIN_SUM, n=50, split="test", seed=1)
    assert not {r.question for r in other_seed} & {r.question for r in train}


def test_chain_sum_records_carry_a_checked_scratchpad():
    for record in load_records(CHAIN_SUM, n=20, split="train"):
        last_line = record.rationale.splitlines()[-1]
        assert last_line.endswith(f"= {record.answer}")


def test_task_options_are_parsed():
    assert parse_task_options("chain_sum?min_terms=2&max_terms=3") == ("chain_sum", {"min_terms": 2, "max_terms": 3})
    with pytest.raises(CotlabError, match="expected key=value"):
        parse_task_options("chain_sum?min_terms")


@pytest.mark.parametrize("spec,message", [
    ("rg:no_such_task", "unknown reasoning-gym task 'no_such_task'"),
    ("missing/file.jsonl", "data file not found: missing/file.jsonl"),
])
def test_bad_specs(spec, message):
    with pytest.raises(CotlabError, match=message):
        load_records(spec, n=2)


def test_non_positive_n():
    with pytest.raises(CotlabError, match="positive"):
        load_records(CHAIN_SUM, n=0)


def test_malformed_jsonl_line_is_named(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps({"question": "q1", "answer": "#### 1"}) + "\n{not json\n")
    with pytest.raises(CotlabError, match=r"bad.jsonl:2: malformed JSON"):
        load_records(str(path), split="all")


def test_record_without_question(tmp_path):
    path = tmp_path / "noq.jsonl"
    path.write_text(json.dumps({"answer": "#### 1"}) + "\n")
    with pytest.raises(CotlabError, match="record 1 has no 'question'"):
        load_records(str(path), split="all")
