"""The lists of which recipe fields matter live in cotlab.recipes; the names they had before
(training's, budget's, lesson 11's) still import and hold the same values."""

from cotlab.recipes import (BOOKKEEPING_FIELDS, DISTILLATION_BUDGET_FIELDS, METHOD_BUDGET_FIELDS, PER_RUN_FIELDS, SCHEDULE_FIELDS,
                            UPDATE_MATCH_FIELDS, DPORecipe, SFTRecipe, budget_fields)


def test_the_old_names_are_the_lists_in_recipes():
    from cotlab import budget, training
    from cotlab.lessons import onpolicy

    assert training.RESUMABLE_CHANGES is BOOKKEEPING_FIELDS and training.SCHEDULE is SCHEDULE_FIELDS
    assert BOOKKEEPING_FIELDS == {"output_dir", "logging_dir", "run_name", "report_to", "disable_tqdm", "logging_steps", "save_steps",
                                  "save_total_limit", "push_to_hub", "hub_model_id", "eval_every"}
    assert SCHEDULE_FIELDS == ("max_steps", "num_train_epochs")
    # Until cotlab.budget and cotlab.lessons.onpolicy read these names, their own copies must agree.
    assert budget.BOOKKEEPING == PER_RUN_FIELDS and budget.MATCH_FIELDS == UPDATE_MATCH_FIELDS
    assert budget.BUDGET_FIELDS == METHOD_BUDGET_FIELDS and onpolicy.BUDGET == DISTILLATION_BUDGET_FIELDS


def test_budget_fields_are_what_matched_budget_compares():
    from cotlab.budget import matched_budget

    a = DPORecipe(model="tiny-random", output_dir="a", seed=1, loss_type=["sigmoid"])
    b = DPORecipe(model="tiny-random", output_dir="b", seed=2, loss_type=["ipo"])
    assert matched_budget({"a": a, "b": b}, varying=("loss_type",)) == budget_fields(a, varying=("loss_type",))
    shared = budget_fields(SFTRecipe(model="tiny-random"))
    assert not set(PER_RUN_FIELDS) & set(shared) and shared["model"] == "tiny-random"
