"""What two training runs must share before their outcomes are compared: the matched budget.

One place for the lists of recipe fields every comparison reads: which fields are bookkeeping
(where and how a run logs and saves, its seed), which make the budget (start, steps, learning rate,
rank, batch), and the checks that runs differ only where a lesson means them to.
"""

from __future__ import annotations

from cotlab import CotlabError

# Fields that may differ between runs of one matched comparison without changing its budget.
BOOKKEEPING = ("output_dir", "logging_dir", "run_name", "seed", "data_seed")


def matched_budget(recipes: dict, varying: tuple[str, ...] = ("loss_type", "importance_sampling_level")) -> dict:
    """Check that runs differ only in `varying` (and the seed and output folder), so a difference
    in outcome is the objective's and not the budget's; return the fields they share."""
    if not recipes:
        raise CotlabError("matched_budget needs at least one recipe")
    ignored = set(varying) | set(BOOKKEEPING)
    labelled = {label: {k: v for k, v in r.to_dict().items() if k not in ignored} for label, r in recipes.items()}
    first_label, shared = next(iter(labelled.items()))
    for label, fields in labelled.items():
        differ = sorted(k for k in shared.keys() | fields.keys() if shared.get(k) != fields.get(k))
        if differ:
            raise CotlabError(f"not a matched comparison: {label} and {first_label} differ in {', '.join(differ)}")
    return shared


# What must be equal for two stages' updates to be compared: the same starting weights, the same
# number of steps, learning rate and adapter rank.  recipe_match checks these; update_comparison
# lists them beside the budget fields that still differ between methods.
MATCH_FIELDS = ("adapter", "max_steps", "learning_rate", "lora_r")


# Budget fields that differ between SFT, DPO and GRPO even when MATCH_FIELDS agree: examples per
# step (per_device_train_batch_size counts rows for SFT, pairs for DPO, completions for GRPO) and
# the KL strength beta (DPO's and GRPO's are different penalties).
BUDGET_FIELDS = MATCH_FIELDS + ("per_device_train_batch_size", "gradient_accumulation_steps", "num_generations", "beta")


def recipe_match(a_metrics: dict, b_metrics: dict, fields: tuple[str, ...] = MATCH_FIELDS) -> dict:
    """Which budget fields of two training runs' recipes (`metrics["recipe"]`) differ:
    {"matched": bool, "differences": {field: (a value, b value)}}."""
    a, b = a_metrics["recipe"], b_metrics["recipe"]
    differences = {f: (a.get(f), b.get(f)) for f in fields if a.get(f) != b.get(f)}
    return {"matched": not differences, "differences": differences}
