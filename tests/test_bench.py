"""The bench scripts in smoke form (tiny model, a step or two): each prints its table and writes
a JSON result with the ratios the README reports."""

import json
import subprocess
import sys

import pytest

from conftest import REPO


def run_bench(script, *args, tmp_path):
    out = tmp_path / f"{script}.json"
    result = subprocess.run([sys.executable, str(REPO / "bench" / f"{script}.py"), "--model", "tiny-random", *args, "--out", str(out)],
                            capture_output=True, text=True, timeout=900, cwd=REPO)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(out.read_text()), result.stdout


@pytest.mark.slow
def test_generation_bench(tmp_path):
    result, table = run_bench("generation", "--n", "4", "--max-new-tokens", "8", "--repeats", "2", tmp_path=tmp_path)
    plain, cotlab = result["rows"]
    assert (plain["config"], cotlab["config"]) == ("plain batched", "cotlab") and plain["sequences"] == cotlab["sequences"] == 4
    low, high = cotlab["tokens_per_second_range"]
    assert low <= cotlab["tokens_per_second"] <= high and result["repeats"] == 2
    assert result["ratio_vs_plain_batched"] == cotlab["ratio_vs_plain_batched"] > 0 and plain["ratio_vs_plain_batched"] == 1
    assert result["greedy_agreement"] == 1.0  # fp32 greedy: the same answers however the batch is run
    assert "ratio_vs_plain_batched" in table and result["environment"]["versions"]["torch"]


def test_generation_bench_refuses_a_vllm_row_without_vllm(tmp_path):
    result = subprocess.run([sys.executable, str(REPO / "bench" / "generation.py"), "--model", "tiny-random", "--backend", "both",
                             "--out", str(tmp_path / "g.json")], capture_output=True, text=True, timeout=300, cwd=REPO)
    assert result.returncode != 0 and "Traceback" not in result.stderr and not (tmp_path / "g.json").exists()
    [line] = result.stderr.strip().splitlines()
    assert "--backend both" in line and "vLLM" in line and "COTLAB_GPU_EXTRAS=full bash scripts/setup.sh" in line


@pytest.mark.slow
def test_sft_bench(tmp_path):
    result, table = run_bench("sft", "--steps", "2", "--batch", "2", "--qlora", "--eval-n", "3", "--max-new-tokens", "4", "--repeats", "1",
                              tmp_path=tmp_path)
    default, cotlab, qlora = result["rows"]
    assert (default["config"], cotlab["config"], qlora["config"]) == ("trl-default", "cotlab", "cotlab-qlora")
    assert cotlab["trainable_parameters"] < default["trainable_parameters"]  # LoRA vs full fine-tuning
    assert qlora["trainable_parameters"] == cotlab["trainable_parameters"]  # the same adapter ...
    assert qlora["weights_memory_mb"] < cotlab["weights_memory_mb"]  # ... on a 4-bit base
    assert default["steps"] == cotlab["steps"] == qlora["steps"] == 2 and cotlab["tokens_per_second"] > 0
    assert all(0 <= row["accuracy"] <= 1 for row in result["rows"]) and "accuracy" in table
    assert default["precision"] == "fp32" and result["ratio_vs_trl_default"] == cotlab["speedup_vs_trl_default"] > 0
    assert cotlab["tokens_per_second_range"] == [cotlab["tokens_per_second"]] * 2 and "precision" in table


@pytest.mark.slow
def test_grpo_step_bench(tmp_path):
    result, _ = run_bench("grpo_step", "--steps", "1", "--num-generations", "2", "--batch", "4", "--max-completion-length", "16",
                          tmp_path=tmp_path)
    row = result["rows"][0]
    assert row["config"] == "hf generate" and row["steps"] == 1
    assert 0 < row["generation_share"] < 1 and abs(row["generation_share"] + row["scoring_share"] + row["training_share"] - 1) < 0.01


def test_generation_bench_skips_the_llama_cpp_row_with_a_note_without_llama_cpp_python(monkeypatch, capsys):
    import importlib.util

    monkeypatch.syspath_prepend(str(REPO / "bench"))
    import generation

    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "llama_cpp" else find_spec(name, *a))
    assert generation.llama_cpp_runner("embedded", None, ["q"], 8) is None
    [line] = capsys.readouterr().out.strip().splitlines()
    assert line == "llama.cpp row skipped: llama-cpp-python is not installed (pip install 'cotlab[bench]')"


@pytest.mark.slow
def test_generation_bench_int8_row_and_llama_cpp_skipped_without_llama_cpp_python(tmp_path):
    """--int8 adds a cotlab int8 row with its agreement and peak fraction, --torchao a torchao int8
    row after it; --fixed-length times every row on exactly max_new_tokens per question; --llama-cpp
    without llama-cpp-python (hidden here by a stub that fails to import) prints a note and leaves
    the row out."""
    pytest.importorskip("torchao")
    import os

    stub = tmp_path / "stub" / "llama_cpp"
    stub.mkdir(parents=True)
    (stub / "__init__.py").write_text("raise ImportError('hidden for the test')\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(stub.parent), str(REPO), os.environ.get("PYTHONPATH", "")])}
    out = tmp_path / "generation.json"
    result = subprocess.run([sys.executable, str(REPO / "bench" / "generation.py"), "--model", "tiny-random", "--n", "4",
                             "--max-new-tokens", "8", "--repeats", "1", "--int8", "--torchao", "--llama-cpp", "--fixed-length",
                             "--out", str(out)],
                            capture_output=True, text=True, timeout=900, cwd=REPO, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "llama.cpp row skipped: llama-cpp-python does not import" in result.stdout
    saved = json.loads(out.read_text())
    assert [row["config"] for row in saved["rows"]][-2:] == ["cotlab", "torchao"] and saved["ratio_vs_llama_cpp"] is None
    int8, torchao = saved["rows"][-2:]
    assert int8["dtype"] == torchao["dtype"] == "int8" and int8["tokens_per_second"] > 0 and 0.5 <= int8["token_agreement"] <= 1
    assert 0.5 <= torchao["token_agreement"] <= 1 and saved["fixed_length"] and saved["rows"][0]["fixed_length_ratio_vs_plain_batched"] == 1
    assert all(row["fixed_length_tokens_per_second"] > 0 for row in saved["rows"]) and saved["best_fixed_length_ratio_vs_plain_batched"] > 0
    assert 0 < int8["peak_fraction"] and set(saved["matmul_peaks"]["gflops"]) >= {"float32", "int8"}
    assert len(saved["load_average"]["before"]) == 3


@pytest.mark.slow
def test_int8_accuracy_bench(tmp_path):
    """int8 against fp32 on the same questions: paired counts, exact McNemar and the verdict sentence."""
    result, table = run_bench("int8_accuracy", "--n", "4", "--max-new-tokens", "8", "--batch-size", "4", tmp_path=tmp_path)
    assert (result["a"], result["b"], result["n"]) == ("int8", "fp32", 4) and 0 <= result["p_value"] <= 1
    assert result["wins"] + result["losses"] + result["both_right"] + result["both_wrong"] == 4
    assert 0 <= result["identical_completions"] <= 4 and set(result["tokens_per_second"]) == {"float32", "int8"}
    assert result["verdict"] in table
