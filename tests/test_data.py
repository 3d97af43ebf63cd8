import json

import pytest

from cotlab import CotlabError
from cotlab.data import load_records, parse_gsm8k_answer, parse_task_options, split_label, split_of

from conftest import CHAIN_SUM, FIXTURES
from math_style import math_style_rows


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
    # reasoning-gym's own checks: an unknown option (TypeError) and its config's validate() (an assert)
    ("rg:chain_sum?no_such_option=1", "bad option for reasoning-gym task 'chain_sum'.*TypeError"),
    ("rg:chain_sum?min_terms=5&max_terms=3", "bad option for reasoning-gym task 'chain_sum'.*max_terms must be >= min_terms"),
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


# Split rules -------------------------------------------------------------------------------------


def test_a_file_is_used_whole_and_in_order_unless_a_split_is_asked(tmp_path):
    path = tmp_path / "bench.jsonl"
    rows = [{"question": f"How many apples are in basket number {i}?", "answer": f"#### {i}"} for i in range(40)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    whole = load_records(str(path))
    assert [r.answer for r in whole] == [str(i) for i in range(40)] and split_label(str(path)) == "as given"
    assert [r.answer for r in load_records(str(path), n=5)] == ["0", "1", "2", "3", "4"]
    test = load_records(str(path), split="test")
    assert split_label(str(path), "test") == "hash:test"
    assert 0 < len(test) < 40 and all(split_of(r.question) == "test" for r in test)


def test_generators_default_to_the_hashed_test_side():
    assert split_label(CHAIN_SUM) == "hash:test" and split_label(CHAIN_SUM, "all") == "all"
    assert [r.id for r in load_records(CHAIN_SUM, n=10)] == [r.id for r in load_records(CHAIN_SUM, n=10, split="test")]
    with pytest.raises(CotlabError, match="unknown split 'dev'"):
        load_records(CHAIN_SUM, n=1, split="dev")


def test_gsm_symbolic_templates_never_straddle_train_and_test():
    train = load_records("rg:gsm_symbolic", n=150, split="train")
    test = load_records("rg:gsm_symbolic", n=60, split="test")
    train_templates, test_templates = {r.metadata["template"] for r in train}, {r.metadata["template"] for r in test}
    assert len(test_templates) > 3 and len(train_templates) > 10
    assert not train_templates & test_templates


# MATH-style rows ----------------------------------------------------------------------------------


def test_math_rows_take_the_last_box_of_the_solution_as_gold(tmp_path):
    pairs = math_style_rows()
    path = tmp_path / "math.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row, _ in pairs))
    records = load_records(str(path))
    assert len(records) == len(pairs)
    right = sum(r.answer == expected for r, (_, expected) in zip(records, pairs))
    assert right / len(pairs) >= 0.99
    assert records[0].rationale == pairs[0][0]["solution"] and records[0].metadata["level"] == 1


def test_math_answer_field_wins_and_a_solution_without_a_box_is_named(tmp_path):
    path = tmp_path / "m.jsonl"
    path.write_text(json.dumps({"problem": "p", "solution": "so $\\boxed{0.5}$", "answer": "\\frac{1}{2}", "unique_id": "u/1.json"}) + "\n"
                    + json.dumps({"problem": "q", "solution": "no box at all"}) + "\n")
    with pytest.raises(CotlabError, match=r"record 2 has no 'answer' and its 'solution' has no \\boxed"):
        load_records(str(path))
    path.write_text(path.read_text().splitlines()[0] + "\n")
    record = load_records(str(path))[0]
    assert (record.id, record.answer) == ("u/1.json", "\\frac{1}{2}")


def test_hub_math_rows_use_the_boxed_answer_not_the_whole_solution(monkeypatch):
    import datasets

    rows = [row for row, _ in math_style_rows(6)]
    seen = {}

    def fake_load_dataset(name, config, split):
        seen.update(name=name, config=config, split=split)
        return rows

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    records = load_records("hf:HuggingFaceH4/MATH-500:default:test")
    assert seen == {"name": "HuggingFaceH4/MATH-500", "config": "default", "split": "test"}
    assert [r.answer for r in records] == [expected for _, expected in math_style_rows(6)]
    assert split_label("hf:HuggingFaceH4/MATH-500:default:test") == "as given"
