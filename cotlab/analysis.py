"""Analysis of a run's artefacts: length, faithfulness, test-time scaling, what training changed.

Every function takes plain rows (what `cotlab.evaluate` writes to predictions.jsonl) or an adapter
folder, so notebooks 05-07 work on any run directory and the tests on small known fixtures.

Faithfulness probes follow *Measuring Faithfulness in Chain-of-Thought Reasoning* (Lanham et al.,
2023: early answering, adding mistakes, filler tokens, paraphrasing) and *Making Reasoning Matter*
(Paul et al., 2024: does the answer follow the chain?).  Each probe edits a given chain (every
stage the same gold chains, so stages compare; a stage's own chains separately), then forces an
answer after it; the question is whether the answer moves with the chain.

Every "what we saw" sentence a lesson prints comes from a function here (or `cotlab.stats`), from
the numbers above it: accuracies with Wilson intervals, two stages on the same questions by the
exact McNemar test, a direction claimed only when the test says so.
"""

from __future__ import annotations

import random
import re
from collections import Counter
from pathlib import Path

from cotlab import CotlabError
from cotlab.evaluate import majority_vote, pass_at_k
from cotlab.stats import (accuracy_phrase, compare_paired, difference_verdict, holm, mcnemar_exact, paired_verdict,
                          wilson_interval)

# Length -------------------------------------------------------------------------------------------


def accuracy_by_length(rows: list[dict], n_bins: int = 4) -> list[dict]:
    """Accuracy within quantile bins of completion length (equal-count bins, shortest first)."""
    if n_bins < 1:
        raise CotlabError(f"n_bins must be positive, got {n_bins}")
    ordered = sorted(rows, key=lambda r: r["completion_tokens"])
    bins = []
    for i in range(n_bins):
        chunk = ordered[i * len(ordered) // n_bins : (i + 1) * len(ordered) // n_bins]
        if chunk:
            right = sum(bool(r["correct"]) for r in chunk)
            bins.append({"low": chunk[0]["completion_tokens"], "high": chunk[-1]["completion_tokens"], "n": len(chunk),
                         "correct": right, "accuracy": right / len(chunk)})
    return bins


def length_verdict(stage: str, bins: list[dict]) -> str:
    """Longest bin against shortest bin, as two accuracies on different questions (Newcombe's
    interval for the difference): a direction only when the interval excludes zero, since a
    quarter of a small evaluation is a handful of answers."""
    if len(bins) < 2:
        return f"{stage}: too few answers to split by length"
    short, long = bins[0], bins[-1]
    return f"{stage}: " + difference_verdict(long["correct"], long["n"], short["correct"], short["n"],
                                             a=f"longest answers ({long['low']}-{long['high']} tokens)",
                                             b=f"shortest ({short['low']}-{short['high']} tokens)")


# Chains and their edits ----------------------------------------------------------------------------

_THINK = re.compile(r"<think>(.*?)</think>", re.DOTALL)
_RESULT = re.compile(r"(=\s*)(-?\d+)")
FORCE_ANSWER = "\n</think>\n<answer>"


def think_part(completion: str) -> str | None:
    """The chain inside <think>…</think>, or None when the completion has no closed chain."""
    match = _THINK.search(completion or "")
    return match.group(1).strip() if match else None


def truncate_chain(chain: str, fraction: float) -> str:
    """The first `fraction` of the chain's words (whitespace kept): early answering."""
    if not 0 <= fraction <= 1:
        raise CotlabError(f"fraction must be in [0, 1], got {fraction}")
    pieces = re.split(r"(\s+)", chain.strip())
    words = [i for i, p in enumerate(pieces) if p and not p.isspace()]
    keep = round(fraction * len(words))
    return "".join(pieces[: words[keep - 1] + 1]) if keep else ""


def corrupt_step(chain: str, rng: random.Random, keep_rest: bool = False) -> str | None:
    """Change one intermediate result (`= N`, not the last one) by a small non-zero amount and
    cut the chain right after it (Lanham et al.'s "adding mistakes": the model then writes the
    rest itself, and a faithful model carries the mistake through to its answer).  keep_rest
    keeps the original text after the mistake.  None when there is no intermediate result."""
    site = _corruption_site(chain, rng)
    if site is None:
        return None
    start, end, wrong = site
    return chain[:start] + wrong + (chain[end:] if keep_rest else "")


def _corruption_site(chain: str, rng: random.Random) -> tuple[int, int, str] | None:
    results = list(_RESULT.finditer(chain))[:-1]
    if not results:
        return None
    target = rng.choice(results)
    return target.start(2), target.end(2), str(int(target.group(2)) + rng.choice([-3, -2, -1, 1, 2, 3]))


def before_final_result(chain: str) -> str | None:
    """The chain cut just before the result of its last arithmetic step ('… -103 - 72 =' from
    '… -103 - 72 = -175'), or None when it states no step.  A gold chain ends by stating the
    answer, so a forced answer after the whole chain measures copying, not whether the steps lead
    the model there; cut here, the model must still do the last step itself."""
    from cotlab.chains import arithmetic_steps

    steps = arithmetic_steps(chain)
    if not steps:
        return None
    return chain[: steps[-1].number_spans[-1][0]].rstrip()


def cut_before_final_results(pairs: list[tuple]) -> list[tuple]:
    """(record, chain) pairs with each chain cut by before_final_result; chains with no step are dropped."""
    return [(record, cut) for record, chain in pairs if (cut := before_final_result(chain))]


def filler_chain(chain: str) -> str:
    """The chain replaced by as many filler words ('...'): does the text of the chain matter?"""
    return " ".join("..." for _ in chain.split())


def _chain_prompts(tokenizer, questions: list[str], chains: list[str], suffix: str = "") -> list[str]:
    """The think-format prompt with the assistant's turn already begun by the given chain."""
    from cotlab.prompts import build_messages, render_prompt

    return [render_prompt(tokenizer, build_messages(q, "think")) + "<think>\n" + c + suffix for q, c in zip(questions, chains)]


def forced_answer_prompts(tokenizer, questions: list[str], chains: list[str]) -> list[str]:
    """Prompt text that ends inside the answer tag, after the given (edited) chain."""
    return _chain_prompts(tokenizer, questions, chains, FORCE_ANSWER)


def model_answerer(model, tokenizer, max_new_tokens: int = 8, continue_tokens: int = 64, batch_size: int = 32):
    """answer(questions, chains, continue_chain=False) -> predictions.  By default the answer is
    forced right after the given chain (greedy, after `<answer>`); with continue_chain the model
    first writes the rest of the chain from where it was cut, then answers as it likes."""
    from cotlab.generate import SamplingConfig, generate
    from cotlab.verify import extract_answer

    forced = SamplingConfig(max_new_tokens=max_new_tokens, batch_size=batch_size)
    free = SamplingConfig(max_new_tokens=continue_tokens, batch_size=batch_size)

    def answer(questions: list[str], chains: list[str], continue_chain: bool = False) -> list[str | None]:
        if continue_chain:
            outputs = generate(model, tokenizer, _chain_prompts(tokenizer, questions, chains), free)
            return [extract_answer(samples[0].text) for samples in outputs]
        outputs = generate(model, tokenizer, forced_answer_prompts(tokenizer, questions, chains), forced)
        return [extract_answer("<answer>" + samples[0].text.split("</answer>")[0] + "</answer>") for samples in outputs]

    return answer


def _correct(records, predictions) -> list[bool]:
    from cotlab.verify import is_correct

    return [bool(is_correct(r, p)) for r, p in zip(records, predictions)]


def _accuracy(records, predictions) -> float:
    return sum(_correct(records, predictions)) / max(1, len(records))


def early_answering(answer, records, chains: list[str], fractions=(0.0, 0.25, 0.5, 0.75, 1.0)) -> list[dict]:
    """Accuracy when the chain is cut to each fraction and an answer forced, and how often that
    answer already equals the full chain's (Lanham et al.): a chain whose answer is fixed long
    before it ends is decoration; one whose answer forms as it goes is doing work.  Each point
    keeps the per-question `correct` list, so two fractions can be compared question by question."""
    questions = [r.question for r in records]
    full = answer(questions, chains)
    curve = []
    for fraction in fractions:
        predictions = answer(questions, [truncate_chain(c, fraction) for c in chains])
        correct = _correct(records, predictions)
        curve.append({"fraction": fraction, "n": len(records), "correct": correct,
                      "accuracy": sum(correct) / len(records),
                      "same_as_full": sum(p == f for p, f in zip(predictions, full)) / len(records)})
    return curve


def _indexed(correct: list[bool]) -> list[dict]:
    return [{"id": i, "correct": c} for i, c in enumerate(correct)]


def chain_effect_verdict(label: str, curve: list[dict], alpha: float = 0.05) -> str:
    """Does the whole chain make the forced answer more accurate than no chain?  The first and
    last points of an early-answering curve are the same questions, so the exact McNemar test
    decides; 'the chain carries the answer' only when the whole chain wins beyond noise."""
    none, full = curve[0], curve[-1]
    comparison = compare_paired(_indexed(full["correct"]), _indexed(none["correct"]),
                                a=f"chain cut to {full['fraction']:.0%}", b=f"chain cut to {none['fraction']:.0%}")
    evidence = (f"forced answer with {none['fraction']:.0%} of the chain {accuracy_phrase(sum(none['correct']), none['n'])}, "
                f"with {full['fraction']:.0%} {accuracy_phrase(sum(full['correct']), full['n'])}; {paired_verdict(comparison, alpha)}")
    if comparison["p_value"] < alpha and comparison["wins"] > comparison["losses"]:
        return f"{label}: the chain carries the answer ({evidence})"
    if comparison["p_value"] < alpha:
        return f"{label}: the answer is worse with the chain than without it ({evidence})"
    return f"{label}: no evidence that the answer comes from the chain ({evidence})"


def faithfulness_probes(answer, records, chains: list[str], seed: int = 0) -> dict:
    """Edit each chain three ways and force an answer after it.

    - corrupted: one intermediate result changed, the model writes the rest of the chain from
      there; `follows` is how often its final answer differs from the one it reaches when
      continuing from the same cut without the mistake: the faithfulness score (1 = the answer
      always follows the chain).
    - filler: the chain replaced by filler; accuracy near the original means the chain's text
      was not needed.
    - paraphrased: the same steps in other words (`cotlab.chains.paraphrase_steps`); only chains
      the paraphrase actually changed count, and `unchanged` near 1 among them means the model
      reads the content, not the surface form.

    Counts sit beside every rate (`changed` of `n` probed, `correct`, `unchanged_count`), so the
    sentences can carry intervals.
    """
    from cotlab.chains import paraphrase_steps

    if not records:
        raise CotlabError("faithfulness probes need at least one chain")
    rng = random.Random(seed)
    questions = [r.question for r in records]
    original = answer(questions, chains)
    sites = [_corruption_site(c, rng) for c in chains]
    usable = [i for i, site in enumerate(sites) if site is not None]
    usable_questions = [questions[i] for i in usable]
    corrupted = [chains[i][: sites[i][0]] + sites[i][2] for i in usable]
    control = [chains[i][: sites[i][1]] for i in usable]  # the same cut, no mistake
    after_corruption = answer(usable_questions, corrupted, continue_chain=True) if usable else []
    after_control = answer(usable_questions, control, continue_chain=True) if usable else []
    changed = sum(a != b for a, b in zip(after_corruption, after_control))
    filler = answer(questions, [filler_chain(c) for c in chains])
    rewritten = [(i, text) for i, (text, was_changed) in enumerate(map(paraphrase_steps, chains)) if was_changed]
    paraphrased = answer([questions[i] for i, _ in rewritten], [text for _, text in rewritten]) if rewritten else []
    unchanged = sum(p == original[i] for (i, _), p in zip(rewritten, paraphrased))
    n = len(records)
    usable_records = [records[i] for i in usable]
    return {
        "n": n,
        "original_correct": sum(_correct(records, original)),
        "original_accuracy": _accuracy(records, original),
        "corrupted": {"n": len(usable), "changed": changed, "follows": changed / max(1, len(usable)),
                      "accuracy": _accuracy(usable_records, after_corruption),
                      "control_accuracy": _accuracy(usable_records, after_control)},
        "filler": {"correct": sum(_correct(records, filler)), "accuracy": _accuracy(records, filler),
                   "unchanged": sum(a == b for a, b in zip(filler, original)) / n},
        "paraphrased": {"n": len(rewritten), "unchanged_count": unchanged,
                        "accuracy": _accuracy([records[i] for i, _ in rewritten], paraphrased),
                        "unchanged": unchanged / len(rewritten) if rewritten else None},
        "faithfulness": changed / max(1, len(usable)),
    }


def probe_sentence(label: str, probes: dict) -> str:
    """What the three probes showed, as counts with Wilson intervals: how many probed chains'
    answers changed after a corrupted step, how accurate filler chains were, and how many of the
    chains a paraphrase really changed kept their answer."""
    n, corrupted, paraphrased = probes["n"], probes["corrupted"], probes["paraphrased"]
    parts = [f"{label} (n={n} chains): with the chain {accuracy_phrase(probes['original_correct'], n)} right"]
    if corrupted["n"]:
        parts.append(f"the answer changed after a corrupted step in {corrupted['changed']} of {corrupted['n']} probed chains "
                     f"(faithfulness {accuracy_phrase(corrupted['changed'], corrupted['n'])})")
    else:
        parts.append("no chain had an intermediate result to corrupt")
    parts.append(f"filler in place of the chain: {accuracy_phrase(probes['filler']['correct'], n)} right")
    if paraphrased["n"]:
        parts.append(f"a paraphrase left the answer unchanged in {paraphrased['unchanged_count']} of the {paraphrased['n']} "
                     f"chains it changed ({accuracy_phrase(paraphrased['unchanged_count'], paraphrased['n'])})")
    else:
        parts.append("the paraphrase changed no chain (no arithmetic step to reword)")
    return "; ".join(parts) + "."


def own_chains(rows: list[dict], by_id: dict, limit: int) -> list[tuple]:
    """(record, chain) for a stage's own correct, closed chains in its evaluation rows, at most `limit`."""
    found = [(by_id[r["id"]], think_part(r["completion"])) for r in rows if r["correct"] and think_part(r["completion"])]
    return found[:limit]


def probe_chain_sets(answer, chain_sets: dict[str, list[tuple]], fractions, seed: int = 0, min_chains: int = 3) -> dict:
    """Early answering and the three probes on each named set of (record, chain) pairs, for one
    model's `answer`: {label: {"curve": ..., "probes": ...}}.  A set with fewer than `min_chains`
    chains is skipped (listed under "skipped" with its size): a rate over one or two chains says nothing."""
    results: dict = {"skipped": {}}
    for label, pairs in chain_sets.items():
        if len(pairs) < min_chains:
            results["skipped"][label] = len(pairs)
            continue
        records, chains = [p[0] for p in pairs], [p[1] for p in pairs]
        results[label] = {"curve": early_answering(answer, records, chains, fractions),
                          "probes": faithfulness_probes(answer, records, chains, seed)}
    return results


# Test-time scaling ---------------------------------------------------------------------------------


def majority_rows(rows: list[dict], k: int) -> list[dict]:
    """Per question, whether the majority vote of its FIRST k samples is right ({"id", "correct"}):
    one fixed vote per question, so maj@k becomes a count with a Wilson interval and two stages
    can be compared question by question (k=1 is the first sample alone)."""
    out = []
    for row in rows:
        samples = row["samples"][:k]
        correct_by_prediction = {s["prediction"]: s["correct"] for s in row["samples"]}
        vote = majority_vote([s["prediction"] for s in samples])
        out.append({"id": row["id"], "correct": bool(correct_by_prediction.get(vote))})
    return out


def scaling_curve(rows: list[dict], ks: list[int], subsets: int = 20, seed: int = 0) -> list[dict]:
    """pass@k (best-of-N with a perfect verifier), maj@k (self-consistency, *Self-Consistency
    Improves Chain of Thought Reasoning in Language Models*) and tokens spent per question, from
    rows evaluated with n ≥ max(ks) samples.  pass@k uses the unbiased estimator; maj@k averages
    the majority vote over random size-k subsets of the n samples.  Beside these smooth estimates
    each point counts, over the FIRST k samples, the questions with any right answer
    (`pass_count`) and with a right majority (`maj_count`) out of `n`: whole counts, so they
    carry Wilson intervals."""
    if not rows or "samples" not in rows[0]:
        raise CotlabError("scaling_curve needs rows evaluated with k > 1 samples (a 'samples' list per row)")
    n = min(len(r["samples"]) for r in rows)
    if max(ks) > n:
        raise CotlabError(f"k={max(ks)} needs at least {max(ks)} samples per question; the rows have {n}")
    rng = random.Random(seed)
    curve = []
    for k in ks:
        pass_k = maj_k = 0.0
        for row in rows:
            samples = row["samples"]
            pass_k += pass_at_k(len(samples), sum(s["correct"] for s in samples), k)
            correct_by_prediction = {s["prediction"]: s["correct"] for s in samples}
            votes = 0
            for _ in range(subsets if k < len(samples) else 1):
                chosen = rng.sample(samples, k)
                votes += bool(correct_by_prediction.get(majority_vote([s["prediction"] for s in chosen])))
            maj_k += votes / (subsets if k < len(samples) else 1)
        mean_tokens = sum(s["tokens"] for row in rows for s in row["samples"]) / sum(len(r["samples"]) for r in rows)
        curve.append({"k": k, "pass": pass_k / len(rows), "maj": maj_k / len(rows), "tokens": k * mean_tokens,
                      "n": len(rows), "pass_count": sum(any(s["correct"] for s in r["samples"][:k]) for r in rows),
                      "maj_count": sum(r["correct"] for r in majority_rows(rows, k))})
    return curve


def scaling_sentence(stage: str, curve: list[dict]) -> str:
    """One stage's test-time scaling in counts with Wilson intervals: one sample, the majority of
    the most samples, any of them right (the verifier's ceiling), and the token cost."""
    first, last = curve[0], curve[-1]
    n = last["n"]
    return (f"{stage}: majority of {first['k']} {accuracy_phrase(first['maj_count'], n)}; majority of {last['k']} "
            f"{accuracy_phrase(last['maj_count'], n)}; any of {last['k']} right (a perfect verifier) "
            f"{accuracy_phrase(last['pass_count'], n)}; {last['tokens'] / first['tokens']:.0f}x the tokens "
            f"({first['tokens']:.0f} -> {last['tokens']:.0f} per question)")


def paired_winner(comparison: dict, alpha: float = 0.05) -> str | None:
    """'a' or 'b' when the exact McNemar test separates two stages at `alpha`, else None."""
    if comparison["p_value"] >= alpha or comparison["wins"] == comparison["losses"]:
        return None
    return "a" if comparison["wins"] > comparison["losses"] else "b"


def sampling_vs_training_sentence(comparison: dict, alpha: float = 0.05) -> str:
    """Tuned model, one sample (A) against the base model's majority vote (B) on the same
    questions: 'sampling more beat training' only when the exact McNemar test says the base
    vote wins; 'did not make up for it' only when the tuned sample wins; otherwise no claim."""
    verdict, winner = paired_verdict(comparison, alpha), paired_winner(comparison, alpha)
    if winner:
        return f"Sampling more beat training here: {verdict}." if winner == "b" else f"Sampling more did not make up for training: {verdict}."
    return f"Neither sampling more nor training is ahead beyond noise on these questions: {verdict}."


# What training changed -----------------------------------------------------------------------------

_LAYER = re.compile(r"layers\.(\d+)\.")


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


# Comparing two training runs ------------------------------------------------------------------------

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


def update_comparison(a: str, b: str, relative: dict[str, float], metrics: dict[str, dict]) -> str:
    """Two stages' relative update sizes, described, never ranked: what the recipes share, what
    differs (examples per step and beta differ between methods even when start, steps, learning
    rate and rank agree, and the data and objective differ by design), so no conclusion about
    which method moves the weights more.  Why no 'per step per learning rate' rescaling: under
    Adam, a warm-up/decay schedule and a B·A factorisation the update is not linear in either."""
    a_recipe, b_recipe = metrics[a]["recipe"], metrics[b]["recipe"]
    fields = [f for f in BUDGET_FIELDS if f in a_recipe or f in b_recipe]
    same = [f for f in fields if a_recipe.get(f) == b_recipe.get(f)]
    differing = [f"{f} {a_recipe.get(f)!r} vs {b_recipe.get(f)!r}" for f in fields if f not in same]
    ratio = f"{relative[a] / relative[b]:.2f}x" if relative[b] else "b is zero"
    return (f"{a} vs {b}: relative update {relative[a]:.4f} vs {relative[b]:.4f} ({ratio}), one run each (one seed, no interval); "
            f"same {', '.join(same) or 'nothing checked'}; different {', '.join(differing + ['training data and objective (by design)'])}; "
            f"descriptive only: no conclusion about which method moves the weights more")


# Scoring a model in a format it can answer ------------------------------------------------------


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


def logprob_change_verdict(label: str, before: list[float], after: list[float], alpha: float = 0.05) -> str:
    """Did the gold answers get more or less likely, question by question?  An exact two-sided
    sign test (the binomial form McNemar's test also uses) on how many questions rose and fell;
    'forgot' or 'gained' only when p < alpha."""
    if len(before) != len(after) or not before:
        raise CotlabError(f"a paired change needs the same questions before and after, got {len(before)} and {len(after)}")
    rose = sum(a > b for a, b in zip(after, before))
    fell = sum(a < b for a, b in zip(after, before))
    p = mcnemar_exact(rose, fell)
    mean = sum(a - b for a, b in zip(after, before)) / len(before)
    evidence = (f"gold answer log-likelihood fell on {fell} and rose on {rose} of {len(before)} questions, mean change "
                f"{mean:+.3f} nats per token, exact sign test p = {p:.2g}")
    if p < alpha and fell > rose:
        return f"{label}: forgetting ({evidence})"
    if p < alpha:
        return f"{label}: the gold answers became more likely ({evidence})"
    return f"{label}: no change we can tell from noise ({evidence})"


# Sentences for lessons 00-03 ------------------------------------------------------------------------


def parameter_phrase(count: int) -> str:
    """'135M' or '0.49B': a model's measured size as the lessons print it."""
    return f"{count / 1e9:.2g}B" if count >= 1e9 else f"{count / 1e6:.0f}M"


def cot_scale_sentence(parameters: int, comparisons: list[dict], alpha: float = 0.05) -> str:
    """Set this run's CoT-vs-direct paired comparisons against *Chain-of-Thought Prompting Elicits
    Reasoning in Large Language Models* (Wei et al.), which finds chain-of-thought 'does not
    positively impact performance for small models' and helps only near 100B parameters.  The
    comparisons are one family, so each is judged by its Holm-adjusted p (`stats.holm`).  A
    prompt that does not beat direct answering is a non-detection at this sample size, never
    'in line with' the paper: a few dozen questions cannot show that there is no gain."""
    size = parameter_phrase(parameters)
    adjusted = holm({i: c["p_value"] for i, c in enumerate(comparisons)})
    helped = [i for i, c in enumerate(comparisons) if adjusted[i] < alpha and c["wins"] > c["losses"]]
    family = f"Holm-adjusted over {len(comparisons)} comparison{'' if len(comparisons) == 1 else 's'}"
    paper = ("*Chain-of-Thought Prompting Elicits Reasoning in Large Language Models*, which reports no gain from "
             "chain-of-thought prompting for small models and gains only near 100B parameters")
    if helped:
        styles = ", ".join(f"{comparisons[i]['a']} (p = {comparisons[i]['p_value']:.2g}, Holm {adjusted[i]:.2g})" for i in helped)
        return f"At {size} parameters, {styles} beat direct answering beyond noise ({family}), unlike the report of {paper}."
    return (f"At {size} parameters no chain-of-thought prompt beat direct answering beyond noise ({family}): no difference "
            f"detected at this sample size, which is absence of evidence, not a confirmation of {paper}.")


def star_sentence(rescued: int, attempted: int) -> str:
    """STaR's rationalisation (*STaR: Bootstrapping Reasoning With Reasoning*) in this run: how
    many unsolved questions got a verified chain once the answer was given, never more than shown."""
    if attempted == 0:
        return "Every sampled question already had a verified chain: STaR had nothing to rationalise."
    if rescued == 0:
        return (f"STaR rationalised none of the {attempted} unsolved questions: even with the answer given, this model "
                "wrote no chain that reaches it and passes the filters.")
    return (f"STaR rationalised {rescued} of {attempted} unsolved questions ({accuracy_phrase(rescued, attempted)}): "
            "with the answer given, the model wrote a verified chain for them.")


def self_teaching_sentence(covered: int, questions: int) -> str:
    """How many sampled questions got at least one verified chain, with its Wilson interval; 'a
    poor teacher of itself' only when even the interval's upper end is below half the questions."""
    low, high = wilson_interval(covered, questions)
    share = accuracy_phrase(covered, questions)
    if high < 0.5:
        return (f"Self-distillation gave a verified chain for {covered} of {questions} questions ({share}): a small model is "
                "a poor teacher of itself here, as the distillation papers' use of much larger teachers suggests.")
    return f"Self-distillation gave a verified chain for {covered} of {questions} questions ({share})."


def halves(log_history: list[dict], key: str) -> tuple[float, float] | None:
    """Mean of a logged metric over the first and the second half of the steps that logged it."""
    values = [e[key] for e in log_history if key in e]
    if len(values) < 2:
        return None
    half = len(values) // 2
    return sum(values[:half]) / half, sum(values[half:]) / (len(values) - half)


def _moved(pair: tuple[float, float] | None) -> str:
    if pair is None:
        return "was logged too few times to tell"
    first, second = pair
    return f"{'rose' if second > first else 'fell' if second < first else 'stayed'} ({first:.2f} -> {second:.2f})"


NO_TEST = "descriptive, no test: half-means of per-batch training logs"


def squeezing_sentence(log_history: list[dict]) -> str:
    """Which way DPO moved the chosen and rejected chains' log-probabilities (first half of the
    logged steps against the second).  Both falling is what *Learning Dynamics of LLM Finetuning*
    calls the squeezing effect: the margin grows while the chosen chain also becomes less likely.
    Descriptive only: each logged value is one training batch's, successive ones are not
    independent, and no test stands behind the direction, so the sentence says so."""
    chosen, rejected = halves(log_history, "logps/chosen"), halves(log_history, "logps/rejected")
    text = f"log-probability of the chosen chains {_moved(chosen)}, of the rejected ones {_moved(rejected)}"
    if chosen and rejected and chosen[1] < chosen[0] and rejected[1] < rejected[0]:
        return (f"The {text} ({NO_TEST}): both fell, the pattern *Learning Dynamics of LLM Finetuning* calls the "
                "squeezing effect; a wider margin here would not mean the right chains became more likely.")
    if chosen and rejected and chosen[1] > chosen[0] and rejected[1] < rejected[0]:
        return f"The {text} ({NO_TEST}): they moved apart, no sign of squeezing."
    return f"The {text}" + (f" ({NO_TEST})." if chosen and rejected else ".")


def margin_sentence(log_history: list[dict], pairs: int, gold_chosen: int) -> str:
    """The reward margin's first half against its second, and whose chains were separated: the
    model's own only when no chosen chain is a gold demonstration.  Descriptive (no test), like
    squeezing_sentence."""
    margins = halves(log_history, "rewards/margins")
    whose = ("its own right and wrong chains" if gold_chosen == 0 else
             f"right from wrong chains ({gold_chosen} of the {pairs} chosen chains are gold demonstrations, not its own)")
    if margins is None:
        return "The reward margin was logged too few times to tell a trend."
    first, second = margins
    moved = f"the mean reward margin went from {first:.3f} (first half) to {second:.3f} (second half)"
    if second > first:
        return f"Over training {moved} ({NO_TEST}): on the training pairs, the margin between {whose} widened."
    return f"Over training {moved} ({NO_TEST}): the margin between {whose} did not widen."


def paper_claim_sentence(comparison: dict, paper: str, claim: str, alpha: float = 0.05) -> str:
    """A paper's claim (stage A beats stage B) against this run's paired test: agreed, not
    reproduced at this scale and budget, or pointing the other way."""
    verdict, winner = paired_verdict(comparison, alpha), paired_winner(comparison, alpha)
    if winner:
        return f"*{paper}* reports {claim}; this run {'agrees' if winner == 'a' else 'points the other way'}: {verdict}."
    return f"*{paper}* reports {claim}; this run does not reproduce it at this scale and budget: {verdict}."
