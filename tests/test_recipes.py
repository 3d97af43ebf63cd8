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
