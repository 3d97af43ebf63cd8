"""What two training runs must share before their outcomes are compared: the matched budget.

The checks that runs differ only where a lesson means them to.  Which fields count (bookkeeping,
per-run, the budget of a comparison between methods) is listed once, in `cotlab.recipes`.
"""

from __future__ import annotations

from cotlab import CotlabError
from cotlab.recipes import UPDATE_MATCH_FIELDS, budget_fields



def matched_budget(recipes: dict, varying: tuple[str, ...] = ("loss_type", "importance_sampling_level")) -> dict:
    """Check that runs differ only in `varying` (and the seed and output folder), so a difference
    in outcome is the objective's and not the budget's; return the fields they share."""
    if not recipes:
        raise CotlabError("matched_budget needs at least one recipe")
    labelled = {label: budget_fields(r, varying) for label, r in recipes.items()}
    first_label, shared = next(iter(labelled.items()))
    for label, fields in labelled.items():
        differ = sorted(k for k in shared.keys() | fields.keys() if shared.get(k) != fields.get(k))
        if differ:
            raise CotlabError(f"not a matched comparison: {label} and {first_label} differ in {', '.join(differ)}")
    return shared


def recipe_match(a_metrics: dict, b_metrics: dict, fields: tuple[str, ...] = UPDATE_MATCH_FIELDS) -> dict:
    """Which budget fields of two training runs' recipes (`metrics["recipe"]`) differ:
    {"matched": bool, "differences": {field: (a value, b value)}}."""
    a, b = a_metrics["recipe"], b_metrics["recipe"]
    differences = {f: (a.get(f), b.get(f)) for f in fields if a.get(f) != b.get(f)}
    return {"matched": not differences, "differences": differences}
