"""Decontamination: training rows sharing a long word n-gram with an evaluation set."""

import json

import pytest

from cotlab import CotlabError
from cotlab.decontaminate import contaminated, ngrams, row_text

from conftest import FIXTURES, run_cli

EVAL = ["Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May.",
        "What is 2 + 3?"]


def test_ngrams_are_lower_cased_and_split_on_punctuation():
    assert ngrams("Half as MANY clips, in May.", 3) == {("half", "as", "many"), ("as", "many", "clips"),
                                                       ("many", "clips", "in"), ("clips", "in", "may")}
    assert ngrams("Two words", 8) == {("two", "words")}


def test_contaminated_finds_shared_eight_grams_only():
    train = ["NATALIA sold clips to 48 of her friends in April; how many in total?",  # 9 shared words
             "Natalia sold pens to 12 of her cousins in June, and then she sold more.",  # shares words, no 8-gram
             "Quick: what is 2 + 3? Explain.",  # contains the whole short eval question
             "A train leaves at noon."]
    assert contaminated(train, EVAL) == [0, 2]
    assert contaminated(train, EVAL, n=3) == [0, 1, 2]
    assert contaminated(train, []) == []
    with pytest.raises(CotlabError, match="positive"):
        contaminated(train, EVAL, n=0)


def test_row_text_reads_questions_and_trl_prompts():
    assert row_text({"question": "q?"}) == "q?"
    assert row_text({"problem": "p?", "solution": "s"}) == "p?"
    prompt = [{"role": "system", "content": "Think first."}, {"role": "user", "content": "What is 2 + 3?"}]
    assert row_text({"prompt": prompt, "completion": [{"role": "assistant", "content": "5"}]}) == "What is 2 + 3?"
    assert row_text({"messages": [*prompt, {"role": "assistant", "content": "5"}]}) == "What is 2 + 3?"
    with pytest.raises(CotlabError, match="cannot tell what it asks"):
        row_text({"text": "x"})


def test_cli_reports_and_drops_contaminated_rows(tmp_path):
    eval_rows = [json.loads(line) for line in (FIXTURES / "gsm8k_sample.jsonl").read_text().splitlines()[:2]]
    train_rows = [{"prompt": [{"role": "user", "content": "Solve: " + eval_rows[0]["question"]}], "completion": "72"},
                  {"prompt": [{"role": "user", "content": "How many legs do three spiders have together?"}], "completion": "24"},
                  {"question": eval_rows[1]["question"].upper(), "answer": "#### 10"}]
    train = tmp_path / "train.jsonl"
    train.write_text("".join(json.dumps(r) + "\n" for r in train_rows))
    out = tmp_path / "clean.jsonl"
    done = run_cli("decontaminate", str(train), str(FIXTURES / "gsm8k_sample.jsonl"), "--drop", str(out))
    assert done.returncode == 0, done.stderr
    assert "2 of 3 training rows share a 8-word n-gram with the 5 evaluation questions" in done.stdout
    assert [json.loads(line) for line in out.read_text().splitlines()] == [train_rows[1]]
    refused = run_cli("decontaminate", "rg:chain_sum", str(train), "--drop", str(tmp_path / "x.jsonl"), "--train-n", "5")
    assert refused.returncode == 2 and "TRAIN must be a file" in refused.stderr
