"""Distillation: gold rationales, rejection sampling that resumes, every filter removing and counting
its bad rows (the whole-chain check, STaR's copied hints), the long/short mix, saving in TRL's
formats, lesson 01's sentences, the HTTP teacher against a real OpenAI-compatible server, and a
killed CLI run."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

from cotlab import CotlabError
from cotlab.chains import chain_is_right
from cotlab.data import load_records, Record
from cotlab.distill import (_judge, accepted, data_card, explained, FILTERS, gold_rationales, mix_long_short, reject_sample,
                            removal_counts, save_dataset, shorten)
from cotlab.generate import Completion
from cotlab.lessons.distillation import (batching_sentence, filter_sentence, mean_tokens, mixture_sentence, sampling_sentence,
                                         star_sentence)
from cotlab.teachers import GoldTeacher, HTTPTeacher, LocalTeacher
from cotlab.generate import SamplingConfig
from cotlab.io import read_jsonl
from cotlab.training import load_training_dataset

from conftest import CHAIN_SUM, REPO, run_cli


@pytest.fixture(scope="module")
def records():
    return load_records(CHAIN_SUM, n=12, split="train")


def test_gold_rationales_verify_and_save_in_trl_formats(records, tmp_path):
    rows = GoldTeacher().rationales(records)
    assert len(rows) == len(records) and all(r["verified"] and r["teacher"] == "gold" for r in rows)
    card = save_dataset(rows, tmp_path, "gold")
    assert card["rows"] == len(records) and card["methods"] == {"gold": len(records)} and card["removed"] == {}
    dataset = load_training_dataset(str(tmp_path / "gold"))
    assert dataset[0]["prompt"][-1]["role"] == "user" and dataset[0]["completion"][0]["role"] == "assistant"
    assert dataset[0]["completion"][0]["content"].endswith(f"<answer>{records[0].answer}</answer>")
    assert len(read_jsonl(tmp_path / "gold.jsonl")) == len(records)
    with pytest.raises(CotlabError, match="is empty"):
        save_dataset([], tmp_path, "nothing")


def verbose(rows):
    """Gold chain_sum chains written the way a chatty teacher writes them: prose around each step,
    list bullets, and negative running totals (the case the old pruning broke)."""
    return [{**row, "rationale": "Let us add the numbers one at a time.\n"
             + "\n".join(f"- Next, {line}, which is the running total." for line in row["rationale"].splitlines())
             + "\nSo that is the sum."} for row in rows]


def test_short_rewrites_are_right_step_by_step_and_mix_at_the_ratio(records):
    from cotlab.chains import check_steps

    long_rows = verbose(GoldTeacher().rationales(records))
    assert any("= -" in row["rationale"] for row in long_rows)  # negative totals are in the fixture
    short, removed = shorten(long_rows, {r.id: r for r in records})
    assert len(short) == len(long_rows) and removed == {} and all(len(s["rationale"]) < s["long_chars"] for s in short)
    all_short = mix_long_short(long_rows, short, short_fraction=1.0)
    assert sum(r["method"].endswith("+short") for r in all_short) == len(short) == len(all_short)
    assert all(check_steps(r["rationale"]) == [] and "Let us" not in r["rationale"] for r in all_short)
    assert mix_long_short(long_rows, short, short_fraction=0.0) == long_rows
    with pytest.raises(CotlabError, match="short_fraction"):
        mix_long_short(long_rows, short, short_fraction=1.5)


def test_a_training_row_with_a_wrong_step_is_never_written(records, tmp_path):
    """The chain reaches the right answer through a wrong step: for an arithmetic task that is refused."""
    row = GoldTeacher().rationales(records)[0]
    lines = row["rationale"].splitlines()
    first = lines[0].rsplit("=", 1)
    wrong = {**row, "rationale": "\n".join([f"{first[0]}= {int(first[1]) + 1}", *lines[1:]])}
    with pytest.raises(CotlabError, match="fail the whole-chain check.*arithmetic error"):
        save_dataset([wrong], tmp_path, "bad")
    assert not (tmp_path / "bad").exists()
    unreached = {**row, "rationale": lines[0]}  # every step right, but it stops before the answer
    with pytest.raises(CotlabError, match="last value ≠ answer"):
        save_dataset([row, unreached], tmp_path, "bad")


# Every filter, one bad sample each ------------------------------------------------------------------

SUM = Record(id="q118", question="State the final answer to the following arithmetic problem: 58 + 26 + 34 =", answer="118")
WORKED = "58 + 26 = 84\n84 + 34 = 118"


def judge(record, texts, hint=False, max_per_question=4, finished=True):
    samples = [Completion(text, 20, finished) for text in texts]
    return _judge(record, samples, "star" if hint else "rejection", "test", SamplingConfig(k=len(samples), temperature=0.7),
                  max_per_question=max_per_question, max_tokens=100, hint=hint)


def test_each_filter_removes_its_bad_sample_and_counts_it():
    answer = "\n<answer>118</answer>"
    texts = {
        None: WORKED + answer,
        "wrong answer": WORKED.replace("118", "117") + "\n<answer>117</answer>",
        "no calculation": "<answer>118</answer>",
        "arithmetic error": "58 + 26 = 85\n85 + 33 = 118" + answer,
        "last value ≠ answer": "58 + 26 = 84\nThe final answer is 118.",
        "hint copied": "We have to reach 118.\n" + WORKED + answer,
        "duplicate": WORKED + answer,
        "enough kept": "26 + 58 = 84\n84 + 34 = 118" + answer,  # right and new, but the question has its one row
    }
    log = judge(SUM, list(texts.values()), hint=True, max_per_question=1)
    assert [s["rejected"] for s in log["samples"]] == list(texts)
    assert [row["rationale"] for row in log["accepted"]] == [WORKED]
    assert removal_counts([log]) == {reason: 1 for reason in texts if reason}
    assert list(removal_counts([log])) == [r for r in FILTERS if r in texts]  # reported in the order the filters run
    unfinished = judge(SUM, [WORKED + answer], finished=False)
    assert removal_counts([unfinished]) == {"unfinished": 1} and not unfinished["accepted"]


def test_star_keeps_no_chain_that_states_the_hinted_answer_without_computing_it():
    """The two rows an executed cpu run's STaR kept as verified, now removed and counted."""
    eight = Record(id="q10", question="State the final answer to the following arithmetic problem: 8 + 2 - 1 + 1 =", answer="10")
    eight_log = judge(eight, ["8 + 2 = 10\n10 − 1 = 9\nSo the final answer is 10.\n<answer>10</answer>"], hint=True)
    fifty_log = judge(SUM, ["58 + 26 = 84\nSo the final answer is 118.\n<answer>118</answer>"], hint=True)
    for log in (eight_log, fifty_log):
        assert log["correct_rate"] == 1.0 and not log["accepted"]  # the answer was right; the chain never reached it
        assert removal_counts([log]) == {"last value ≠ answer": 1}
    # Computed, not copied: kept.  An answer that is also a number of the question cannot be called copied.
    assert judge(SUM, [WORKED + "\n<answer>118</answer>"], hint=True)["accepted"]
    echo = Record(id="q7", question="What is 7 + 3 - 3?", answer="7")
    assert judge(echo, ["7 is where we start.\n7 + 3 = 10\n10 - 3 = 7\n<answer>7</answer>"], hint=True)["accepted"]
    assert removal_counts([judge(SUM, ["As the hint says, 58 + 26 = 84\n84 + 34 = 118\n<answer>118</answer>"],
                                 hint=True)]) == {"hint copied": 1}


def test_gold_chains_that_fail_the_whole_chain_check_are_counted_not_written(tmp_path):
    gold = [Record(id="good", question="58 + 26 + 34?", answer="118", rationale=WORKED),
            Record(id="none", question="1 + 1?", answer="2"),
            Record(id="stated", question="58 + 26 + 34?", answer="118", rationale=WORKED + "\n#### 117"),
            Record(id="rounded", question="1 / 3 * 3?", answer="1", rationale="1 / 3 = 0.33\n0.33 * 3 = 1"),
            Record(id="short", question="58 + 26 + 34?", answer="118", rationale="58 + 26 = 84\nthen add 34")]
    rows, removed = gold_rationales(gold)
    assert [r["source_id"] for r in rows] == ["good"]
    assert removed == {"no chain": 1, "wrong answer": 1, "arithmetic error": 1, "last value ≠ answer": 1}
    assert GoldTeacher().rationales(gold) == rows
    card = save_dataset(rows + rows, tmp_path, "gold", removed=removed)
    assert card["rows"] == 1 and card["removed"] == {**removed, "duplicate": 1}
    assert filter_sentence("gold", card) == ("gold: 1 of 6 candidate chains kept; the filters removed 5 (1 no chain, "
                                             "1 wrong answer, 1 arithmetic error, 1 last value ≠ answer, 1 duplicate).")


# The long/short mixture -----------------------------------------------------------------------------


def test_the_mixture_of_a_small_chain_sum_set_is_at_least_a_fifth_verified_short_rows(records, tokenizer):
    by_id = {r.id: r for r in records}
    gold = GoldTeacher().rationales(records)
    short, removed = shorten(gold, by_id)
    assert short == [] and removed == {"not shorter": len(gold)}  # bare gold chains: nothing to prune
    assert mix_long_short(gold, short) == gold

    long_rows = explained(gold)
    short, removed = shorten(long_rows, by_id)
    assert len(short) == len(long_rows) == len(records) and removed == {}
    mixed = mix_long_short(long_rows, short, short_fraction=0.5, seed=3)
    shorts = [r for r in mixed if r["method"] == "gold+explained+short"]
    assert len(shorts) == round(0.5 * len(records)) and len(shorts) / len(mixed) >= 0.2
    assert all(chain_is_right(r["rationale"], r["answer"]) for r in mixed)
    assert [r["rationale"] for r in short] == [g["rationale"] for g in gold]  # the calculations alone are the gold chain
    tokens = {"long": mean_tokens(tokenizer, long_rows), "short": mean_tokens(tokenizer, short), "mixed": mean_tokens(tokenizer, mixed)}
    assert tokens["short"] < tokens["mixed"] < tokens["long"] and tokens["short"] < 0.5 * tokens["long"]
    assert mean_tokens(tokenizer, []) == 0.0


# Lesson 01's sentences: each says what the numbers say, and changes with them ------------------------


def test_lesson_01_sentences_change_with_the_result():
    long_rows = [{"source_id": f"q{i}", "method": "gold+explained", "rationale": "x"} for i in range(4)]
    some = long_rows[:2] + [{**r, "method": "gold+explained+short"} for r in long_rows[2:]]
    tokens = {"long": 80.0, "short": 20.0, "mixed": 50.0}
    none_short = mixture_sentence(4, 0, long_rows, {**tokens, "mixed": 80.0})
    assert none_short.startswith("The mixture is not a mixture here: 0 of 4 long chains") and "all 4 mixed rows are long" in none_short
    mixed = mixture_sentence(4, 4, some, tokens)
    assert mixed.startswith("2 of 4 mixed rows (50%) are short forms") and "long 80, short 20 (25% of long), mixed 50" in mixed
    assert "not measured here" in mixed and "not measured here" in none_short
    assert filter_sentence("gold", {"rows": 3, "removed": {}}) == "gold: all 3 candidate chains passed every filter and were kept."
    kept_all = sampling_sentence("m", {0.5: 0.5}, {0.5: 0.25}, 2, {})
    assert kept_all.endswith("2 chains kept by rejection sampling; of all samples drawn (rejection sampling and STaR), "
                             "the filters removed none.")
    assert sampling_sentence("m", {0.5: 0.5}, {0.5: 0.25}, 2, {"wrong answer": 5}).endswith("removed 5 (5 wrong answer).")
    assert "computes it" in star_sentence(1, 2) and "computes it" in star_sentence(0, 2)
    assert batching_sentence({"batched": 30.0, "one at a time": 10.0}, 8).startswith("Batched sampling ran 3.0x faster")


class CountingTeacher(LocalTeacher):
    """The tiny model, counting how many questions it was asked (to prove a resume asks none twice)."""

    def __init__(self, loaded):
        super().__init__("tiny-random", loaded=loaded)
        self.asked = 0

    def complete(self, conversations, sampling, progress=False):
        self.asked += len(conversations)
        return super().complete(conversations, sampling, progress)


def test_rejection_sampling_logs_every_question_and_resumes(records, tiny, tmp_path):
    teacher = CountingTeacher(tiny)
    sampling = SamplingConfig(max_new_tokens=8, temperature=1.0, k=2, batch_size=8)
    log = tmp_path / "rejection.log.jsonl"
    first = reject_sample(teacher, records[:5], sampling, log, chunk_size=2, progress=False)
    assert [r["source_id"] for r in first] == [r.id for r in records[:5]] and teacher.asked == 5
    assert all(len(r["samples"]) == 2 and 0 <= r["acceptance"] <= r["correct_rate"] <= 1 for r in first)
    # A torn last line (a kill mid-write) is repaired; only the 7 new questions are asked.
    with open(log, "a") as f:
        f.write('{"source_id": "torn')
    both = reject_sample(teacher, records, sampling, log, chunk_size=2, progress=False)
    assert teacher.asked == 5 + 7 and [r["source_id"] for r in both] == [r.id for r in records]
    assert both[:5] == first
    assert accepted(both) == [row for r in both for row in r["accepted"]]
    with pytest.raises(CotlabError, match="other parameters"):
        reject_sample(teacher, records, SamplingConfig(max_new_tokens=9, temperature=1.0, k=2), log, progress=False)
    assert data_card("d", accepted(both), both)["backend"] == "hf"


def test_a_vllm_teacher_samples_with_vllm_and_the_data_card_says_so(fake_vllm, records, tmp_path):
    from cotlab.models import tiny_random_checkpoint

    teacher = LocalTeacher("tiny-random", backend="vllm")
    assert teacher.backend == "vllm" and teacher.model is None  # vLLM loads the model itself
    logs = reject_sample(teacher, records[:3], SamplingConfig(max_new_tokens=8, temperature=1.0, k=2), tmp_path / "r.log.jsonl",
                         chunk_size=2, progress=False)
    (call,) = fake_vllm  # one engine for both chunks: starting one takes a minute
    assert call["model"] == str(tiny_random_checkpoint()) and call["generated"] == 2
    assert call["params"].n == 2 and len(call["prompts"]) == 1  # the last chunk
    assert all(len(log["samples"]) == 2 for log in logs) and teacher.stats.tokens == 3 * 2 * 3
    assert data_card("d", accepted(logs), logs)["backend"] == "vllm"


@pytest.mark.slow
def test_a_killed_distill_run_resumes_without_duplicates_or_losses(tmp_path):
    """SIGKILL a real `cotlab distill` mid-run, rerun the same command: every question appears
    exactly once in the log, and the rows written before the kill are kept as they were."""
    out = tmp_path / "distill"
    n = 40
    command = [sys.executable, "-m", "cotlab.cli", "distill", "--data", CHAIN_SUM, "--teacher", "tiny-random", "--n", str(n),
               "--k", "2", "--temperature", "1.0", "--max-new-tokens", "24", "--chunk-size", "2", "--out", str(out)]
    process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    log = out / "rejection.log.jsonl"
    deadline = time.time() + 300
    while time.time() < deadline and (not log.exists() or len(log.read_text().splitlines()) < 4):
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    before = read_jsonl(log, tolerate_torn_tail=True)
    assert 4 <= len(before) < n, "the run should have been killed part-way"

    rerun = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=600)
    after = read_jsonl(log)
    ids = [row["source_id"] for row in after]
    assert len(ids) == len(set(ids)) == n
    assert after[: len(before)] == before
    # The tiny random model verifies nothing, so the run ends with a clear one-line error, not a traceback.
    assert rerun.returncode == 2 and "dataset 'distilled' is empty" in rerun.stderr and "Traceback" not in rerun.stderr


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def openai_server(tmp_path_factory):
    """`transformers serve` on loopback with the tiny model: a real OpenAI-compatible endpoint."""
    from cotlab.models import tiny_random_checkpoint

    port = _free_port()
    path = str(tiny_random_checkpoint())
    server_log = tmp_path_factory.mktemp("serve") / "serve.log"
    with open(server_log, "w") as log:
        process = subprocess.Popen([os.path.join(os.path.dirname(sys.executable), "transformers"), "serve", path,
                                    "--host", "127.0.0.1", "--port", str(port), "--device", "cpu"],
                                   stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.time() + 180
        while time.time() < deadline:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2)
                break
            except OSError:
                if process.poll() is not None:
                    pytest.fail(f"transformers serve exited: {server_log.read_text()[-2000:]}")
                time.sleep(0.5)
        else:
            pytest.fail("transformers serve did not come up in 180 s")
        yield base, path
    finally:
        process.terminate()
        process.wait(timeout=30)


def test_http_teacher_against_a_real_server(openai_server, records, tmp_path):
    base, model_path = openai_server
    teacher = HTTPTeacher(base, model_path, concurrency=2, timeout=60)
    sampling = SamplingConfig(max_new_tokens=12, temperature=1.0, k=2)
    outputs = teacher.complete([[{"role": "user", "content": r.question}] for r in records[:3]], sampling)
    assert [len(o) for o in outputs] == [2, 2, 2]  # k samples each, one request per sample
    assert all(isinstance(c.text, str) and 0 < c.tokens <= 12 for o in outputs for c in o)
    assert teacher.stats.sequences == 6 and teacher.stats.tokens > 0

    # The same endpoint through the CLI, resumable log included.
    result = run_cli("distill", "--data", CHAIN_SUM, "--teacher", model_path, "--teacher-url", base, "--n", "3", "--k", "2",
                     "--max-new-tokens", "12", "--out", str(tmp_path / "http"))
    assert len(read_jsonl(tmp_path / "http" / "rejection.log.jsonl")) == 3
    assert result.returncode == 2 and "is empty" in result.stderr  # a random model verifies nothing

    # A server that is not there: a clear error after the retries, not a hang.
    dead = HTTPTeacher(f"http://127.0.0.1:{_free_port()}/v1", "x", max_retries=1, timeout=2)
    with pytest.raises(CotlabError, match="unreachable after 2 tries"):
        dead.complete([[{"role": "user", "content": "hi"}]], SamplingConfig(max_new_tokens=4))


def test_acceptance_counts_kept_chains_and_correct_rate_counts_right_answers(records):
    """A right answer with no working is correct but not accepted: the two rates differ."""
    from cotlab.distill import _judge
    from cotlab.generate import Completion

    record = records[0]
    worked = record.rationale + f"\n<answer>{record.answer}</answer>"
    samples = [Completion(worked, 20, True), Completion(f"<answer>{record.answer}</answer>", 5, True),
               Completion("<answer>-99999</answer>", 5, True), Completion(worked, 20, True)]
    log = _judge(record, samples, "rejection", "test", SamplingConfig(k=4, temperature=0.7), max_per_question=4, max_tokens=100)
    assert [s["rejected"] for s in log["samples"]] == [None, "no calculation", "wrong answer", "duplicate"]
    assert log["correct_rate"] == 0.75 and log["acceptance"] == 0.25 and len(log["accepted"]) == 1
