"""Every shipped recipe in configs/recipes/ builds its trainer and takes one step on the tiny random
model.  Parsing a recipe is not enough: sft_gpu.yaml once set `padding_free` without packing, which
TRL 1.16 refuses only after the model has loaded.

What each run changes, and why (everything else is the file's own):
- `model`/`teacher` -> tiny-random, `adapter`/`teacher_adapter` -> none: no hub, and no earlier
  stage's adapter exists in a test;
- `dataset` -> a few rows of the stage's kind (the files name data that `cotlab distill` or
  notebook 03 writes, or a hub split);
- sizes -> one step of a small batch: `max_steps: 1` (`num_train_epochs` would walk the dataset),
  `per_device_train_batch_size`, `gradient_accumulation_steps: 1`, `max_length`,
  `max_completion_length`, `n_prompts`, `save_steps`;
- GPU-only: `report_to: none` (TensorBoard files are not what is tested); `bf16`/`dtype` are left to
  the recipe's `auto` on this device, `load_in_4bit` (QLoRA) and `activation_checkpointing` run
  as written (bitsandbytes' NF4 runs on CPU); `use_vllm` is False without a GPU (the recipe's None).
"""

import pytest

from cotlab.data import load_records
from cotlab.prompts import sft_example, think_completion
from cotlab.recipes import load_recipe
from cotlab.training import STAGES

from conftest import CHAIN_SUM, REPO

RECIPES = sorted((REPO / "configs" / "recipes").glob("*.yaml"))

# (field, value) pairs overridden for every recipe that has the field set or needs it.
SIZES = {"max_steps": 1, "per_device_train_batch_size": 2, "gradient_accumulation_steps": 1, "save_steps": 1,
         "report_to": "none", "logging_steps": 1}


@pytest.fixture(scope="module")
def records():
    return load_records(CHAIN_SUM, n=4, split="train")


def stage_rows(stage, records):
    if stage == "sft":
        return [sft_example(r.question, r.rationale, r.answer) for r in records]
    if stage == "dpo":
        return [{"prompt": sft_example(r.question, r.rationale, r.answer)["prompt"],
                 "chosen": [{"role": "assistant", "content": think_completion(r.rationale, r.answer)}],
                 "rejected": [{"role": "assistant", "content": think_completion(r.rationale, str(int(r.answer) + 3))}]}
                for r in records]
    return CHAIN_SUM  # GRPO and on-policy distillation take a task spec: n_prompts of its train split


def smoke_overrides(stage: str, values: dict, tmp_path) -> dict:
    overrides = {**SIZES, "model": "tiny-random", "adapter": None, "output_dir": str(tmp_path / "out"), "dataset": ""}
    if "max_length" in values:
        overrides["max_length"] = 256
    if stage in ("grpo", "onpolicy"):
        overrides.update(n_prompts=4, max_completion_length=16)
    if stage == "grpo":
        overrides.update(per_device_train_batch_size=values.get("num_generations", 4), guards="warn")  # one whole group
    if stage == "onpolicy":
        overrides.update(teacher="tiny-random", teacher_adapter=None)
    return overrides


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.name)
def test_every_shipped_recipe_takes_one_step(path, records, tmp_path):
    import yaml

    stage = path.name.split("_")[0]
    values = yaml.safe_load(path.read_text())
    overrides = smoke_overrides(stage, values, tmp_path)
    smoke = tmp_path / path.name
    smoke.write_text(yaml.safe_dump({**values, **overrides}))
    recipe = load_recipe(stage, str(smoke))
    kept = {k: v for k, v in values.items() if k not in overrides}
    assert kept, "every recipe keeps some of its own fields"
    for key, value in kept.items():  # the file's own choices reach the trainer unchanged
        assert getattr(recipe, key) in (value, [value]), key  # TRL keeps DPO's loss_type as a list
    metrics = STAGES[stage](recipe, stage_rows(stage, records))
    assert metrics["steps"] == 1
    assert (tmp_path / "out" / "final" / "adapter_config.json").is_file()
