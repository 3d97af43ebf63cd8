"""The lists of which recipe fields matter live in cotlab.recipes, and matched comparisons read them."""

from cotlab.recipes import (BOOKKEEPING_FIELDS, DISTILLATION_BUDGET_FIELDS, METHOD_BUDGET_FIELDS, PER_RUN_FIELDS, SCHEDULE_FIELDS,
                            UPDATE_MATCH_FIELDS, DPORecipe, SFTRecipe, budget_fields)


def test_every_list_of_which_fields_matter_lives_in_recipes():
    """One home for the field lists: no module keeps a copy of its own."""
    import re

    from conftest import REPO

    assert BOOKKEEPING_FIELDS == {"output_dir", "logging_dir", "run_name", "report_to", "disable_tqdm", "logging_steps", "save_steps",
                                  "save_total_limit", "push_to_hub", "hub_model_id", "eval_every"}
    assert SCHEDULE_FIELDS == ("max_steps", "num_train_epochs") and set(UPDATE_MATCH_FIELDS) <= set(METHOD_BUDGET_FIELDS)
    assert set(PER_RUN_FIELDS) >= {"output_dir", "seed"} and "seed" in DISTILLATION_BUDGET_FIELDS
    for path in (REPO / "cotlab").rglob("*.py"):
        if path.name != "recipes.py":
            copies = re.findall(r'^[A-Z_]+ = (?:frozenset\(\{|\()"output_dir"|^[A-Z_]+ = \("adapter", "max_steps"', path.read_text(), re.M)
            assert not copies, f"{path} keeps its own list of recipe fields"


def test_budget_fields_are_what_matched_budget_compares():
    from cotlab.budget import matched_budget

    a = DPORecipe(model="tiny-random", output_dir="a", seed=1, loss_type=["sigmoid"])
    b = DPORecipe(model="tiny-random", output_dir="b", seed=2, loss_type=["ipo"])
    assert matched_budget({"a": a, "b": b}, varying=("loss_type",)) == budget_fields(a, varying=("loss_type",))
    shared = budget_fields(SFTRecipe(model="tiny-random"))
    assert not set(PER_RUN_FIELDS) & set(shared) and shared["model"] == "tiny-random"


# --- One config vocabulary: a profile's stage block is a recipe dict, and a recipe file agrees with it ---

# Where a file's set-up differs from the profile's stage on purpose: where it runs (placement), and the QLoRA variant.
PLACEMENT = {"model", "adapter", "dataset", "output_dir", "save_steps", "logging_steps", "report_to", "teacher", "teacher_adapter"}
VARIANTS = {"sft_qlora_gpu": {"load_in_4bit"}}


def _stage_block(profile: str, notebook: str, param: str) -> dict:
    from cotlab.runs import load_profile, notebooks, plan_parameters

    return plan_parameters(load_profile(profile), notebooks([notebook[:2]]), {})[notebook][param]


def _file_stage(path) -> tuple[str, str, str]:
    """(profile, notebook, parameter) a recipe file mirrors, from its first line."""
    import re

    found = re.match(r"# The (\w+) profile's (\w+) `(\w+)` recipe", path.read_text())
    assert found, f"{path.name}: its first line must say which profile stage it mirrors"
    return found.groups()


def test_every_recipe_file_agrees_with_its_profile_stage():
    """sft_cpu.yaml once trained 60 steps while the cpu profile's SFT took 45: every field a shipped
    recipe file and its profile stage both set must be equal."""
    from conftest import REPO

    files = sorted((REPO / "configs" / "recipes").glob("*.yaml"))
    assert len(files) >= 9
    for path in files:
        import yaml

        profile, notebook, param = _file_stage(path)
        block, recipe = _stage_block(profile, notebook, param), yaml.safe_load(path.read_text())
        shared = (set(block) & set(recipe)) - PLACEMENT - VARIANTS.get(path.stem, set())
        assert {"max_steps", "learning_rate"} <= shared, f"{path.name} shares too little with {profile}/{notebook} to be checked"
        differ = {key: (recipe[key], block[key]) for key in shared if recipe[key] != block[key]}
        assert not differ, f"{path.name} disagrees with profile {profile} {notebook} {param}: {differ}"


def test_a_profile_stage_block_is_handed_to_its_recipe_class_unchanged():
    """Each stage's dict (notebook default merged with the profile) builds its recipe class as it is:
    TRL's field names (max_steps), nothing renamed on the way."""
    from cotlab.recipes import RECIPES

    for profile in ("smoke", "cpu", "gpu"):
        for notebook, param in (("02_sft_lora", "sft"), ("03_dpo", "dpo"), ("04_grpo", "grpo"), ("09_grpo_objectives", "grpo"),
                                ("10_what_in_a_chain_teaches", "sft"), ("11_on_policy_distillation", "onpolicy")):
            block = _stage_block(profile, notebook, param)
            recipe = RECIPES[param](**{**block, "model": "tiny-random", "use_vllm": False} if param == "grpo" else {**block, "model": "tiny-random"})
            # TRL itself turns a single loss_type into a list of one
            assert all(getattr(recipe, key) in (value, [value]) for key, value in block.items()), (profile, notebook)


def test_a_profile_field_and_a_p_override_reach_the_recipe_dict():
    from cotlab.runs import load_profile, notebooks, plan_parameters

    plan = plan_parameters(load_profile("cpu"), notebooks(["02"]), {"sft.learning_rate": 3e-4})["02_sft_lora"]["sft"]
    assert plan["max_steps"] == 45 and plan["learning_rate"] == 3e-4 and plan["lora_alpha"] == 32  # profile, -p, notebook default


def test_model_name_or_path_is_accepted_as_model():
    import pytest

    from cotlab import CotlabError

    assert SFTRecipe(model_name_or_path="tiny-random").model == "tiny-random"
    with pytest.raises(CotlabError, match="name different models"):
        SFTRecipe(model="a", model_name_or_path="b")
