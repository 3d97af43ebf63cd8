"""Every command line the README and docs/gpu.md show runs, or the doc says it is not tested here.

Each command in a ```bash block is one of:
- marked in the doc: its comment, or a comment line above it in its block, says `not tested here:
  WHY` (GPUs, a cluster, the hub);
- executed below in smoke form (RUN): the doc's own words, shrunk by `smoke_form`'s fixed rules, in
  the doc's order in one scratch folder, so a command that reads what an earlier one wrote (a
  distilled set, a run directory) finds it;
- executed in smoke form by another named test (ELSEWHERE), which must exist.
A command the docs gain without one of these fails the first test.
"""

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import FIXTURES, REPO

DOCS = ("README.md", "docs/gpu.md")
UNTESTED = "not tested here:"


def documented_commands():
    """(doc, command, reason it is not tested or None) for every command line of every bash block."""
    for doc in DOCS:
        text = (REPO / doc).read_text()
        for block in re.findall(r"```bash\n(.*?)```", text, re.S):
            block_reason = None
            for line in re.sub(r"\\\n\s*", " ", block).splitlines():
                line = line.strip()
                if not line:
                    continue
                if line.startswith("#"):
                    if UNTESTED in line:
                        block_reason = line.split(UNTESTED, 1)[1].strip()
                    continue
                command, *comment = re.split(r"\s#\s?", line, maxsplit=1)
                comment = comment[0] if comment else ""
                reason = comment.split(UNTESTED, 1)[1].strip() if UNTESTED in comment else block_reason
                yield doc, " ".join(command.split()), reason


# Run here in smoke form, in this order (a later command reads what an earlier one wrote).
RUN = [
    'cotlab eval --model embedded --data rg:gsm_symbolic --n 8 --out runs/eval-gsm',
    'cotlab eval --model embedded --data path/to/gsm8k.jsonl --style few_shot_cot --k 8 --temperature 0.7',
    'cotlab distill --data "rg:chain_sum?min_terms=3&max_terms=4" --teacher gold --n 600 --out data/cs --name gold',
    'cotlab distill --data "rg:chain_sum?min_terms=3&max_terms=4" --teacher embedded --k 4 --star --out data/cs',
    'cotlab train sft --config configs/recipes/sft_cpu.yaml --set dataset=data/cs/gold --set max_steps=20',
    'cotlab train grpo --list-fields',
    'cotlab score --data hf:openai/gsm8k:main:test --completions vllm_outputs.jsonl --out runs/score',
    'cotlab decontaminate data/cs/gold.jsonl "rg:chain_sum?min_terms=3&max_terms=4" --drop data/cs/clean.jsonl',
    'cotlab run --profile cpu --only 00 --out runs/cpu-00',
    'cotlab run --resume runs/cpu-00',
    'cotlab report runs/cpu-00 --out reports/cpu-00',
    'cotlab tasks',
    'cotlab distill --data hf:openai/gsm8k:main:train --teacher gold --n 7000 --out data/gsm8k --name gold',
    'cotlab score --data hf:openai/gsm8k:main:test --completions vllm_completions.jsonl --out runs/score-gsm8k',
    'cotlab decontaminate data/gsm8k/gold.jsonl hf:openai/gsm8k:main:test --drop data/gsm8k/gold.clean.jsonl',
]

# Run in smoke form by another test (file::function).
ELSEWHERE = {
    "make run": "tests/test_runs.py::test_the_whole_suite_runs_in_the_smoke_profile",  # + .ci/run sets up as make run does
    "make test": "tests/test_packaging.py::test_ci_sets_up_as_make_run_does_then_runs_make_test",  # CI runs it
    "bash scripts/setup.sh": "tests/test_packaging.py::test_ci_sets_up_as_make_run_does_then_runs_make_test",
    "sbatch scripts/cotlab.sbatch": "tests/test_packaging.py::test_the_sbatch_job_runs_and_a_requeue_resumes",
    "cotlab distill --data path/to/gsm8k.jsonl --teacher MODEL --teacher-url http://127.0.0.1:8000/v1 --out data/g":
        "tests/test_distill.py::test_http_teacher_against_a_real_server",
    "cotlab run --profile cpu --only 02 --sweep sft.lora_r=4,16 --sweep sft.learning_rate=1e-3,3e-4":
        "tests/test_report.py::test_a_seed_sweep_scores_every_run_on_the_same_questions",
    "cotlab export runs/<time>-cpu --stage grpo --merge out/grpo":
        "tests/test_export.py::test_export_merges_the_chain_into_a_model_plain_transformers_loads",
    "cotlab export runs/cotlab-gpu-123456 --stage grpo --merge models/grpo":
        "tests/test_export.py::test_export_merges_the_chain_into_a_model_plain_transformers_loads",
    "python bench/sft.py --model Qwen/Qwen2.5-0.5B-Instruct --steps 50 --batch 16 --qlora": "tests/test_bench.py::test_sft_bench",
    "python bench/generation.py --fp32 --bf16 --int8 --torchao --llama-cpp --fixed-length --out bench/results/generation.json":
        "tests/test_bench.py::test_generation_bench_int8_row_and_llama_cpp_skipped_without_llama_cpp_python",
    "python bench/int8_accuracy.py --out bench/results/int8_accuracy.json": "tests/test_bench.py::test_int8_accuracy_bench",
}

# A synopsis line stands for the forms RUN gives.
SYNOPSES = {
    "cotlab train sft|dpo|grpo|onpolicy --config configs/recipes/sft_cpu.yaml [--set key=value ...]",
    "cotlab run --profile smoke|cpu|gpu [--out DIR] [--only 00 02] [-p key=value ...]",
    "cotlab report RUN_DIR [RUN_DIR ...] --out reports/x",
}


def test_every_documented_command_is_run_or_marked():
    unaccounted, stale = [], []
    commands = list(documented_commands())
    assert len(commands) > 30
    for doc, command, reason in commands:
        if reason is not None:
            assert reason, f"{doc}: '{command}' is marked untested without saying why"
            continue
        if command in ELSEWHERE:
            where, name = ELSEWHERE[command].split("::")
            assert re.search(rf"^def {name}\(", (REPO / where).read_text(), re.M), f"{ELSEWHERE[command]} does not exist"
        elif command not in RUN and command not in SYNOPSES:
            unaccounted.append(f"{doc}: {command}")
    shown = {command for _, command, _ in commands}
    stale = [c for c in [*RUN, *ELSEWHERE, *SYNOPSES] if c not in shown]
    assert not unaccounted, "documented commands neither tested nor marked 'not tested here: why':\n" + "\n".join(unaccounted)
    assert not stale, "commands tested here that no doc shows any more:\n" + "\n".join(stale)


GSM8K = str(FIXTURES / "gsm8k_sample.jsonl")
SHRINK = {"--n": "2", "--max-new-tokens": "8", "--k": "2"}


def smoke_form(command: str) -> list[str]:
    """The doc's command with the tiny random model, a few questions and short completions: models
    become tiny-random (a `gold` teacher stays), hub and placeholder GSM8K data the GSM8K fixture
    (no hub in tests), `--profile cpu` the smoke profile, `--n`/`--k`/`--max-new-tokens` 2/2/8,
    a recipe one step of batch 2."""
    args = shlex.split(command)
    out = []
    for i, arg in enumerate(args):
        before = args[i - 1] if i else ""
        if i == 0 and arg == "cotlab":
            arg = str(Path(sys.executable).parent / "cotlab")
        elif before in ("--model", "--teacher") and arg != "gold":
            arg = "tiny-random"
        elif before in SHRINK:
            arg = SHRINK[before]
        elif before == "--profile" and arg == "cpu":
            arg = "smoke"
        elif arg.startswith("hf:openai/gsm8k") or arg.startswith("path/to/gsm8k"):
            arg = GSM8K
        out.append(arg)
    if out[1] in ("eval", "distill") and "--max-new-tokens" not in out:
        out += ["--max-new-tokens", "8"]
    if out[1] == "train" and "--config" in out:
        out += ["--set", "model=tiny-random", "--set", "max_steps=1", "--set", "per_device_train_batch_size=2", "--set", "save_steps=1"]
    if out[1] == "run" and "--profile" in out:
        out += ["-p", "n_eval=2"]
    return out


# A model that has never been trained verifies no chain: distilling with it ends "is empty" (exit
# 2, the documented outcome), having generated, judged and logged every question.
EMPTY_IS_EXPECTED = {"cotlab distill --data \"rg:chain_sum?min_terms=3&max_terms=4\" --teacher embedded --k 4 --star --out data/cs"}


@pytest.mark.slow
def test_documented_commands_run_in_smoke_form(tmp_path):
    (tmp_path / "configs").symlink_to(REPO / "configs")
    rows = [line for line in Path(GSM8K).read_text().splitlines()[:3]]
    import json

    completions = [json.dumps({"question": json.loads(r)["question"], "completion": "The answer is 3."}) for r in rows]
    for name in ("vllm_outputs.jsonl", "vllm_completions.jsonl"):
        (tmp_path / name).write_text("\n".join(completions) + "\n")
    for command in RUN:
        args = smoke_form(command)
        result = subprocess.run(args, cwd=tmp_path, capture_output=True, text=True, timeout=600)
        if command in EMPTY_IS_EXPECTED and result.returncode == 2 and "is empty" in result.stderr:
            continue
        assert result.returncode == 0, f"{command}\n  ran as: {shlex.join(args)}\n{result.stdout[-1500:]}\n{result.stderr[-1500:]}"
