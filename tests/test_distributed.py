"""Many processes: every stage under torchrun (DDP over gloo on 2 CPU processes), the checks that
depend on how a run is launched, and the accelerate configs read by accelerate itself."""

import json
import os
import subprocess
import sys
import time
from types import SimpleNamespace

import pytest
import yaml

from cotlab import CotlabError
from cotlab.data import load_records
from cotlab.prompts import sft_example, think_completion
from cotlab.recipes import GRPORecipe, SFTRecipe, check_engine, check_generation_batch, check_vllm_layout, sharded_engine

from conftest import CHAIN_SUM, REPO

ACCELERATE_ENV = ("ACCELERATE_USE_FSDP", "ACCELERATE_USE_DEEPSPEED", "ACCELERATE_DEEPSPEED_ZERO_STAGE", "WORLD_SIZE")


@pytest.fixture
def launch_env(monkeypatch):
    """A clean slate of the variables a launcher exports, whatever the shell running the tests set."""
    for name in ACCELERATE_ENV:
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


@pytest.fixture(scope="module")
def records():
    return load_records(CHAIN_SUM, n=8, split="train")


def _write_jsonl(path, rows):
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return str(path)


def torchrun(stage: str, recipe: dict, tmp_path) -> tuple[subprocess.CompletedProcess, float]:
    """`python -m torch.distributed.run --nproc_per_node 2 -m cotlab.train STAGE --config R`, as a user runs it."""
    path = tmp_path / f"{stage}.yaml"
    path.write_text(yaml.safe_dump({"model": "tiny-random", "output_dir": str(tmp_path / stage), "max_steps": 2,
                                    "logging_steps": 1, "save_steps": 100, **recipe}))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1"}
    for name in ACCELERATE_ENV:
        env.pop(name, None)
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               "-m", "cotlab.train", stage, "--config", str(path)]
    start = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=tmp_path, env=env)
    return result, time.perf_counter() - start


def assert_one_run(result, out, steps: int = 2) -> dict:
    """One adapter, one summary printed (by rank 0 alone), one metrics.json with the global figures."""
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count('"stage":') == 1, result.stdout[-3000:]
    assert (out / "final" / "adapter_config.json").is_file() and (out / "final" / "adapter_model.safetensors").is_file()
    metrics = json.loads((out / "metrics.json").read_text())
    printed = json.loads(result.stdout[result.stdout.index("{\n"):result.stdout.rindex("\n}") + 2])
    assert metrics["world_size"] == printed["world_size"] == 2
    assert metrics["steps"] == printed["steps"] == steps
    assert metrics["train_tokens"] == printed["train_tokens"] > 0
    assert metrics["final_loss"] == printed["final_loss"]
    return metrics


@pytest.mark.slow
def test_sft_on_two_processes(records, tmp_path):
    rows = [sft_example(r.question, r.rationale, r.answer) for r in records]
    data = _write_jsonl(tmp_path / "sft.jsonl", rows)
    result, wall = torchrun("sft", {"dataset": data, "per_device_train_batch_size": 2, "max_length": 128}, tmp_path)
    metrics = assert_one_run(result, tmp_path / "sft")
    # Tokens are summed over both processes: 2 steps x 2 processes x 2 rows train all 8 rows once,
    # more tokens than the 4 longest rows, which is the most one process could have trained.
    from cotlab.models import load_tokenizer

    tokenizer = load_tokenizer("tiny-random")
    lengths = sorted(min(128, len(tokenizer.apply_chat_template(row["prompt"] + row["completion"], return_dict=False))) for row in rows)
    assert metrics["train_tokens"] > sum(lengths[-4:])
    assert metrics["train_tokens"] <= sum(lengths)
    print(f"sft torchrun wall {wall:.1f} s", {k: metrics[k] for k in ("world_size", "train_tokens", "final_loss", "wall_seconds")})


@pytest.mark.slow
def test_dpo_on_two_processes(records, tmp_path):
    pairs = [{"prompt": sft_example(r.question, r.rationale, r.answer)["prompt"],
              "chosen": [{"role": "assistant", "content": think_completion(r.rationale, r.answer)}],
              "rejected": [{"role": "assistant", "content": think_completion(r.rationale, str(int(r.answer) - 7))}]} for r in records]
    data = _write_jsonl(tmp_path / "pairs.jsonl", pairs)
    result, wall = torchrun("dpo", {"dataset": data, "per_device_train_batch_size": 2, "max_length": 128}, tmp_path)
    metrics = assert_one_run(result, tmp_path / "dpo")
    assert metrics["train_pairs"] == len(records)
    print(f"dpo torchrun wall {wall:.1f} s", {k: metrics[k] for k in ("world_size", "train_tokens", "final_loss", "wall_seconds")})


@pytest.mark.slow
def test_grpo_on_two_processes_from_a_task_spec(tmp_path):
    """2 completions per process make one group of 4: invalid on one process, valid on two."""
    recipe = {"dataset": CHAIN_SUM, "n_prompts": 8, "num_generations": 4, "per_device_train_batch_size": 2,
              "max_completion_length": 16, "max_steps": 1, "use_vllm": False, "guards": "warn"}  # the random model never ends a chain
    result, wall = torchrun("grpo", recipe, tmp_path)
    metrics = assert_one_run(result, tmp_path / "grpo", steps=1)
    assert metrics["recipe"]["generation_batch_size"] == 4  # TRL's own global figure: 2 per process x 2 processes
    print(f"grpo torchrun wall {wall:.1f} s", {k: metrics[k] for k in ("world_size", "train_tokens", "final_loss", "wall_seconds")})


def _grpo_batch(**fields):
    """The fields check_generation_batch reads, TRL's defaults for the rest."""
    return SimpleNamespace(**{"per_device_train_batch_size": 2, "gradient_accumulation_steps": 1, "steps_per_generation": None,
                              "generation_batch_size": None, "num_generations": 4, **fields})


def test_grpo_groups_are_checked_against_the_global_batch(launch_env):
    """TRL fills one generation batch from every process: per_device x processes x steps must hold
    whole groups, so the same recipe can be wrong on one process and right on two (the torchrun
    test above trains it), or the reverse."""
    with pytest.raises(CotlabError, match=r"2 x 1 process\(es\) x gradient_accumulation_steps 1 = 2 completions\) "
                                          r"must be a multiple of num_generations \(4\)"):
        GRPORecipe(num_generations=4, per_device_train_batch_size=2, use_vllm=False)  # WORLD_SIZE unset: one process
    check_generation_batch(_grpo_batch(), 2)  # one group of 4 across two processes
    with pytest.raises(CotlabError, match="= 6 completions"):
        check_generation_batch(_grpo_batch(), 3)
    check_generation_batch(_grpo_batch(steps_per_generation=2), 1)
    with pytest.raises(CotlabError, match=r"generation_batch_size \(6\) must be a multiple of the global batch"):
        check_generation_batch(_grpo_batch(generation_batch_size=6, num_generations=2), 2)
    # The recipe reads the process count a launcher exported; 4 per process on 1 or 2 processes is fine
    launch_env.setenv("WORLD_SIZE", "3")
    with pytest.raises(CotlabError, match=r"2 x 3 process\(es\)"):
        GRPORecipe(num_generations=4, per_device_train_batch_size=2, use_vllm=False)


def test_colocated_vllm_groups_must_divide_the_processes():
    check_vllm_layout(SimpleNamespace(vllm_mode="colocate", vllm_tensor_parallel_size=2), 4)
    check_vllm_layout(SimpleNamespace(vllm_mode="server", vllm_tensor_parallel_size=2), 3)  # the server's own GPUs
    with pytest.raises(CotlabError, match=r"vllm_tensor_parallel_size \(2\) must divide the number of processes \(3\)"):
        check_vllm_layout(SimpleNamespace(vllm_mode="colocate", vllm_tensor_parallel_size=2), 3)


@pytest.mark.parametrize("env, engine", [
    ({"ACCELERATE_USE_FSDP": "true"}, "FSDP"),
    ({"ACCELERATE_USE_DEEPSPEED": "true", "ACCELERATE_DEEPSPEED_ZERO_STAGE": "3"}, "DeepSpeed ZeRO-3"),
    ({"ACCELERATE_USE_DEEPSPEED": "true", "ACCELERATE_DEEPSPEED_ZERO_STAGE": "2"}, None),
    ({}, None),
])
def test_qlora_is_refused_under_sharding_engines(launch_env, env, engine):
    """What `accelerate launch` exports for fsdp.yaml / zero3.yaml: a 4-bit base loaded whole onto
    each GPU cannot be sharded, so QLoRA stops with one line; DDP and ZeRO-2 keep it."""
    for name, value in env.items():
        launch_env.setenv(name, value)
    assert sharded_engine() == engine
    if engine is None:  # DDP and ZeRO-2 hold the whole 4-bit base on each GPU: allowed
        check_engine(SimpleNamespace(load_in_4bit=True, merge=True, fsdp=None, deepspeed=None))
        return
    with pytest.raises(CotlabError, match=f"load_in_4bit \\(QLoRA\\) cannot run under {engine}") as error:
        SFTRecipe(model="tiny-random", load_in_4bit=True)  # refused before TRL or a model is touched
    assert "\n" not in str(error.value)
    with pytest.raises(CotlabError, match=f"merge: true cannot run under {engine}"):
        SFTRecipe(model="tiny-random", merge=True)


def test_qlora_is_refused_with_a_recipes_own_zero3_config(launch_env, tmp_path):
    """The Trainer's own route (torchrun plus `deepspeed: ds.json` in the recipe) is read too."""
    config = tmp_path / "ds.json"
    config.write_text(json.dumps({"zero_optimization": {"stage": 3}}))
    recipe = SimpleNamespace(fsdp=None, deepspeed=str(config))
    assert sharded_engine(recipe) == "DeepSpeed ZeRO-3"
    assert sharded_engine(SimpleNamespace(fsdp=None, deepspeed={"zero_optimization": {"stage": 2}})) is None
    assert sharded_engine(SimpleNamespace(fsdp="full_shard auto_wrap", deepspeed=None)) == "FSDP"


def _accelerate_config(name):
    from accelerate.commands.config.config_args import load_config_from_file

    return load_config_from_file(str(REPO / "configs" / "accelerate" / name))


@pytest.mark.parametrize("name, distributed_type", [
    ("cpu.yaml", "NO"), ("single_gpu.yaml", "NO"), ("multi_gpu.yaml", "MULTI_GPU"),
    ("zero2.yaml", "DEEPSPEED"), ("zero3.yaml", "DEEPSPEED"), ("fsdp.yaml", "FSDP"),
])
def test_accelerate_configs_read_by_accelerate(name, distributed_type):
    config = _accelerate_config(name)
    assert type(config).__name__ == "ClusterConfig" and config.distributed_type == distributed_type


def test_sharded_configs_save_whole_adapters():
    """Trainer.save_model writes weights under FSDP only with FULL_STATE_DICT (SHARDED_STATE_DICT
    saves nothing), and under ZeRO-3 only when the 16-bit weights are gathered on save."""
    fsdp = _accelerate_config("fsdp.yaml").fsdp_config
    assert fsdp["fsdp_state_dict_type"] == "FULL_STATE_DICT" and fsdp["fsdp_version"] == 2
    zero2, zero3 = _accelerate_config("zero2.yaml").deepspeed_config, _accelerate_config("zero3.yaml").deepspeed_config
    assert zero2["zero_stage"] == 2 and zero3["zero_stage"] == 3
    assert zero3["zero3_save_16bit_model"] is True
    assert sorted(p.name for p in (REPO / "configs" / "accelerate").glob("*.yaml")) == sorted(
        ["cpu.yaml", "single_gpu.yaml", "multi_gpu.yaml", "zero2.yaml", "zero3.yaml", "fsdp.yaml"])
