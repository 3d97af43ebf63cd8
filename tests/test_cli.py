"""The CLI as a user meets it: real subprocesses, real files, and one-line errors on bad input."""

import json

import pytest

from conftest import CHAIN_SUM, FIXTURES, run_cli


def test_eval_end_to_end_on_the_tiny_model(tmp_path):
    out = tmp_path / "eval"
    result = run_cli("eval", "--model", "tiny-random", "--data", CHAIN_SUM, "--n", "3", "--max-new-tokens", "8", "--out", str(out))
    assert result.returncode == 0, result.stderr
    rows = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert len(rows) == 3
    assert {"id", "question", "gold", "prediction", "correct", "completion", "completion_tokens"} <= set(rows[0])
    summary = json.loads((out / "summary.json").read_text())
    assert summary["n"] == 3 and summary["model"] == "tiny-random" and summary["data"] == CHAIN_SUM
    assert "accuracy" in summary and "mean_completion_tokens" in summary and summary["sampling"]["max_new_tokens"] == 8
    # The printed accuracy carries its Wilson 95% interval (not ± a standard error), and which backend generated.
    low, high = summary["interval"]
    assert f"accuracy {summary['accuracy']:.3f} (Wilson 95% {low:.3f}–{high:.3f}" in result.stdout and "±" not in result.stdout
    assert summary["backend"] == "hf" and "with the hf backend" in result.stdout  # --backend auto, and no vLLM here

    # A second evaluation into the same folder is refused and leaves the first untouched.
    before = (out / "summary.json").read_text()
    again = run_cli("eval", "--model", "tiny-random", "--data", CHAIN_SUM, "--n", "3", "--out", str(out))
    assert again.returncode != 0 and "already holds" in again.stderr
    assert (out / "summary.json").read_text() == before


def test_eval_reads_gsm8k_jsonl(tmp_path):
    out = tmp_path / "gsm"
    result = run_cli("eval", "--model", "tiny-random", "--data", str(FIXTURES / "gsm8k_sample.jsonl"), "--split", "all",
                     "--max-new-tokens", "4", "--out", str(out))
    assert result.returncode == 0, result.stderr
    golds = sorted(json.loads(line)["gold"] for line in (out / "predictions.jsonl").read_text().splitlines())
    assert golds == sorted(["72", "10", "5", "850000", "1080"])


@pytest.mark.parametrize("args,message", [
    (["eval", "--data", "missing.jsonl", "--model", "tiny-random"], "data file not found: missing.jsonl"),
    (["eval", "--data", "rg:nope", "--model", "tiny-random"], "unknown reasoning-gym task 'nope'"),
    (["eval", "--data", CHAIN_SUM, "--model", "./no-such-model"], "unknown model './no-such-model'"),
    (["eval", "--data", CHAIN_SUM, "--n", "0"], "expected a positive integer"),
    (["eval", "--data", CHAIN_SUM, "--n", "-3"], "expected a positive integer"),
    (["eval", "--data", CHAIN_SUM, "--model", "tiny-random", "--backend", "vllm"], "the vllm backend needs vLLM"),
    (["distill", "--data", CHAIN_SUM, "--teacher", "tiny-random", "--backend", "vllm", "--out", "d"], "the vllm backend needs vLLM"),
    (["eval", "--data", CHAIN_SUM, "--backend", "tensorrt"], "invalid choice: 'tensorrt'"),
    (["run", "--profile", "nope"], "unknown profile 'nope'"),
    (["run", "--profile", "smoke", "-p", "no_such_param=1"], "unknown parameter(s) no_such_param"),
    (["run", "--resume", "/tmp"], "not a cotlab run directory"),
    (["run", "--profile", "smoke", "-p", "n_eval=[1"], "bad parameter 'n_eval=[1': its value is not valid YAML"),
    (["train", "sft", "--set", "learning_rate=[1"], "bad override 'learning_rate=[1': its value is not valid YAML"),
    # resolve_dtype has no float16 (fp16 weights overflow where bf16 does not): the CLI does not offer it
    (["export", "/tmp", "--stage", "sft", "--merge", "out", "--dtype", "float16"], "invalid choice: 'float16'"),
])
def test_bad_input_gives_one_line_error(args, message, tmp_path):
    result = run_cli(*args, cwd=tmp_path)
    assert result.returncode != 0
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "runs").exists()  # nothing was started


def test_eval_and_distill_take_a_generation_backend():
    from cotlab.cli import build_parser

    parser = build_parser()
    assert parser.parse_args(["eval", "--data", CHAIN_SUM]).backend == "auto"
    assert parser.parse_args(["eval", "--data", CHAIN_SUM, "--backend", "hf"]).backend == "hf"
    assert parser.parse_args(["distill", "--data", CHAIN_SUM, "--out", "d", "--backend", "vllm"]).backend == "vllm"


def test_malformed_jsonl_line_through_the_cli(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"question": "q", "answer": "#### 1"}\n{"question": \n')
    result = run_cli("eval", "--model", "tiny-random", "--data", str(path), cwd=tmp_path)
    assert result.returncode == 2 and "bad.jsonl:2: malformed JSON" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_a_bad_reasoning_gym_option_is_one_line(tmp_path):
    """reasoning-gym's own validation (an assert in its config) reaches the user as cotlab's error."""
    result = run_cli("eval", "--model", "tiny-random", "--data", "rg:chain_sum?min_terms=5&max_terms=3", "--n", "2", cwd=tmp_path)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("cotlab: error: bad option for reasoning-gym task 'chain_sum' in 'rg:chain_sum?min_terms=5&max_terms=3'")
    assert "max_terms" in line  # reasoning-gym's own reason
