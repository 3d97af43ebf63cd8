"""Lesson 07, what training changed: the size of each stage's weight update per layer and module,
and gain against forgetting by the gold answer's log-likelihood."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

from cotlab import CotlabError
from cotlab.recipes import METHOD_BUDGET_FIELDS
from cotlab.prompts import forced_answer_prompts
from cotlab.stats import mcnemar_exact, mde_paired, mde_phrase


def lora_delta_norms(adapter: str | Path, base_weights: dict | None = None) -> list[dict]:
    """Per layer and module, the Frobenius norm of the LoRA update ΔW = (alpha/r)·B·A, and its
    size relative to the frozen weight when `base_weights` (name -> tensor) is given."""
    import json

    from safetensors.torch import load_file

    folder = Path(adapter)
    weights_file, config_file = folder / "adapter_model.safetensors", folder / "adapter_config.json"
    if not weights_file.is_file() or not config_file.is_file():
        raise CotlabError(f"{folder} is not a PEFT LoRA adapter (adapter_model.safetensors and adapter_config.json)")
    config = json.loads(config_file.read_text())
    scale = config["lora_alpha"] / config["r"]
    tensors = load_file(str(weights_file))
    pairs: dict[str, dict] = {}
    for key, tensor in tensors.items():
        if ".lora_" not in key:
            continue
        prefix, _, part = key.partition(".lora_")
        pairs.setdefault(prefix, {})[part[0]] = tensor.float()
    rows = []
    for prefix, ab in sorted(pairs.items()):
        layer = int(m.group(1)) if (m := _LAYER.search(prefix)) else -1
        module = prefix.rsplit(".", 1)[-1]
        delta = scale * ab["B"] @ ab["A"]
        row = {"layer": layer, "module": module, "norm": float(delta.norm())}
        if base_weights is not None:
            name = prefix.removeprefix("base_model.model.") + ".weight"
            if name in base_weights:
                row["relative"] = float(delta.norm() / base_weights[name].float().norm())
        rows.append(row)
    return rows


def norms_by(rows: list[dict], key: str, value: str = "norm") -> dict:
    """Sum (in quadrature) of the update norms grouped by 'layer' or 'module'."""
    totals: Counter = Counter()
    for row in rows:
        totals[row[key]] += row.get(value, 0.0) ** 2
    return {k: v**0.5 for k, v in sorted(totals.items())}


def forgetting(accuracy: dict[str, dict[str, float]], reference: str = "base") -> dict[str, dict[str, float]]:
    """Change in accuracy on tasks not trained on, per stage, relative to the reference stage:
    negative numbers are forgetting."""
    if reference not in accuracy:
        raise CotlabError(f"no '{reference}' stage to measure forgetting against")
    return {stage: {task: value - accuracy[reference][task] for task, value in tasks.items()}
            for stage, tasks in accuracy.items() if stage != reference}








def update_comparison(a: str, b: str, relative: dict[str, float], metrics: dict[str, dict]) -> str:
    """Two stages' relative update sizes, described, never ranked: what the recipes share, what
    differs (examples per step and beta differ between methods even when start, steps, learning
    rate and rank agree, and the data and objective differ by design), so no conclusion about
    which method moves the weights more.  Why no 'per step per learning rate' rescaling: under
    Adam, a warm-up/decay schedule and a B·A factorisation the update is not linear in either."""
    a_recipe, b_recipe = metrics[a]["recipe"], metrics[b]["recipe"]
    fields = [f for f in METHOD_BUDGET_FIELDS if f in a_recipe or f in b_recipe]
    same = [f for f in fields if a_recipe.get(f) == b_recipe.get(f)]
    differing = [f"{f} {a_recipe.get(f)!r} vs {b_recipe.get(f)!r}" for f in fields if f not in same]
    ratio = f"{relative[a] / relative[b]:.2f}x" if relative[b] else "b is zero"
    return (f"{a} vs {b}: relative update {relative[a]:.4f} vs {relative[b]:.4f} ({ratio}), one run each (one seed, no interval); "
            f"same {', '.join(same) or 'nothing checked'}; different {', '.join(differing + ['training data and objective (by design)'])}; "
            f"descriptive only: no conclusion about which method moves the weights more")


def update_size_sentence(relative: dict[str, float]) -> str:
    """Each stage's relative LoRA update ||ΔW||/||W||, described: one run each, so no interval and
    no ranking; none when the run trained no adapter."""
    if not relative:
        return "Relative update size: not measured, this run has no adapters (run notebooks 02-04 first)."
    sizes = ", ".join(f"{stage} {value:.4f}" for stage, value in relative.items())
    return (f"Relative update size ||ΔW||/||W||: {sizes} (LoRA adapters, not full fine-tuning as in Scalpel vs. Hammer; "
            f"one run each, no interval).")


def gold_answer_logprob(model, tokenizer, records, chains: list[str] | None = None, batch_size: int = 16) -> list[float]:
    """Mean log-probability per token of each record's gold answer, written right after the think
    prompt, the given chain (empty by default) and `</think>\n<answer>`: the format is supplied,
    only the answer is scored, so a model that never learned the think format is not scored 0
    for its format (*An Empirical Study of Catastrophic Forgetting in Large Language Models During
    Continual Fine-tuning* measures forgetting on tasks the model could answer before).  One
    forward pass per question; the same scoring for every model."""
    import torch

    if not records:
        raise CotlabError("gold_answer_logprob needs at least one record")
    chains = chains if chains is not None else [""] * len(records)
    prompts = forced_answer_prompts(tokenizer, [r.question for r in records], chains)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    device = next(model.parameters()).device
    scores = []
    for b in range(0, len(records), batch_size):
        prefixes = [tokenizer(p, add_special_tokens=False).input_ids for p in prompts[b : b + batch_size]]
        answers = [tokenizer(str(r.answer), add_special_tokens=False).input_ids for r in records[b : b + batch_size]]
        width = max(len(p) + len(a) for p, a in zip(prefixes, answers))
        ids = torch.full((len(prefixes), width), pad, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for i, (p, a) in enumerate(zip(prefixes, answers)):  # right padding: positions stay those of an unpadded pass
            ids[i, : len(p) + len(a)] = torch.tensor(p + a)
            mask[i, : len(p) + len(a)] = 1
        with torch.no_grad():
            logits = model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits.float()
        logprobs = torch.log_softmax(logits, dim=-1).cpu()
        for i, (p, a) in enumerate(zip(prefixes, answers)):
            positions = torch.arange(len(p) - 1, len(p) + len(a) - 1)  # the logits that predict each answer token
            scores.append(float(logprobs[i, positions, torch.tensor(a)].mean()))
    return scores


def training_points(training_dir: str | Path, final_adapter: str | None, final_step: int | None) -> list[tuple[str, int, str | None]]:
    """(label, step, adapter) along one training run: the base model (step 0), every kept
    `checkpoint-N` that holds an adapter, and the final adapter (unless a checkpoint is the same step)."""
    found = []
    for folder in Path(training_dir).glob("checkpoint-*"):
        step = folder.name.removeprefix("checkpoint-")
        if step.isdigit() and (folder / "adapter_config.json").is_file():
            found.append((f"step {step}", int(step), str(folder)))
    points = [("base", 0, None), *sorted(found, key=lambda p: p[1])]
    if final_adapter and final_step not in {p[1] for p in found}:
        points.append(("final", final_step or 0, final_adapter))
    return points


def score_points(model_name: str, points, record_sets: dict[str, list], batch_size: int = 16) -> list[dict]:
    """gold_answer_logprob for every point of `training_points` on each named record set:
    [{"label", "step", "scores": {set: [per-question log-prob]}, "mean": {set: mean}}]."""
    from cotlab.models import load_model

    scored = []
    for label, step, adapter in points:
        model, tokenizer = load_model(model_name, adapter=adapter)
        scores = {name: gold_answer_logprob(model, tokenizer, records, batch_size=batch_size) for name, records in record_sets.items()}
        scored.append({"label": label, "step": step, "scores": scores,
                       "mean": {name: sum(v) / len(v) for name, v in scores.items()}})
        del model
    return scored


def _sign_counts(before: list[float], after: list[float]) -> dict:
    if len(before) != len(after) or not before:
        raise CotlabError(f"a paired change needs the same questions before and after, got {len(before)} and {len(after)}")
    rose = sum(a > b for a, b in zip(after, before))
    fell = sum(a < b for a, b in zip(after, before))
    return {"n": len(before), "rose": rose, "fell": fell, "p_value": mcnemar_exact(rose, fell),
            "mean_change": sum(a - b for a, b in zip(after, before)) / len(before)}


def _sign_evidence(counts: dict) -> str:
    return (f"gold answer log-likelihood fell on {counts['fell']} and rose on {counts['rose']} of {counts['n']} questions, "
            f"mean change {counts['mean_change']:+.3f} nats per token, exact sign test p = {counts['p_value']:.2g}")


def logprob_change_verdict(label: str, before: list[float], after: list[float], alpha: float = 0.05) -> str:
    """Did the gold answers get more or less likely, question by question?  An exact two-sided
    sign test (the binomial form McNemar's test also uses) on how many questions rose and fell;
    'forgot' or 'gained' only when p < alpha.  Beside it, the sign test's minimum detectable
    effect: the net share of questions (rose minus fell) it finds with 80% power (`mde_paired`
    with every question moving one way or the other)."""
    counts = _sign_counts(before, after)
    evidence = (f"{_sign_evidence(counts)}; "
                f"{mde_phrase(mde_paired(counts['n'], 1.0, alpha), counts['n'], 'sign test, net share of questions that rose')}")
    if counts["p_value"] < alpha and counts["fell"] > counts["rose"]:
        return f"{label}: forgetting ({evidence})"
    if counts["p_value"] < alpha:
        return f"{label}: the gold answers became more likely ({evidence})"
    return f"{label}: no change we can tell from noise ({evidence})"


def trained_task_control(before: list[float], after: list[float], alpha: float = 0.05) -> dict:
    """The forgetting measure's positive control: on the task the stage trained on, its gold
    answers must have become more likely than under the base model (the sign test at alpha).  A
    measure that cannot see a gain the stage's accuracy shows cannot be trusted to see a loss
    elsewhere, so the untrained tasks get a verdict only when this passes."""
    counts = _sign_counts(before, after)
    return {"passed": counts["p_value"] < alpha and counts["rose"] > counts["fell"],
            "what": "on the trained task the gold answer's log-likelihood (after an empty chain) rose against the base model, exact sign test",
            **counts}


def forgetting_verdict(label: str, before: list[float], after: list[float], control: dict, alpha: float = 0.05) -> str:
    """logprob_change_verdict on an untrained task, printed only when the stage's
    `trained_task_control` passed; otherwise the sentence says the instrument could not see the
    effect and gives no verdict."""
    if not control["passed"]:
        return (f"{label}: no verdict, the instrument could not see the effect: on the trained task "
                f"{_sign_evidence(control)} (positive control failed)")
    return logprob_change_verdict(label, before, after, alpha)


_LAYER = re.compile(r"layers\.(\d+)\.")
