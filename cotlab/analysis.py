"""Analysis of a run's artefacts: length, faithfulness, test-time scaling, what training changed.

Every function takes plain rows (what `cotlab.evaluate` writes to predictions.jsonl) or an adapter
folder, so notebooks 05-07 work on any run directory and the tests on small known fixtures.

Faithfulness probes follow *Measuring Faithfulness in Chain-of-Thought Reasoning* (Lanham et al.,
2023: early answering, adding mistakes, filler tokens, paraphrasing) and *Making Reasoning Matter*
(Paul et al., 2024: does the answer follow the chain?).  Each probe edits the model's own chain,
then forces an answer after it; the question is whether the answer moves with the chain.
"""

from __future__ import annotations

import random
import re
from collections import Counter
from pathlib import Path

from cotlab import CotlabError
from cotlab.evaluate import majority_vote, pass_at_k

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
            bins.append({"low": chunk[0]["completion_tokens"], "high": chunk[-1]["completion_tokens"], "n": len(chunk),
                         "accuracy": sum(r["correct"] for r in chunk) / len(chunk)})
    return bins


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


def filler_chain(chain: str) -> str:
    """The chain replaced by as many filler words ('...'): does the text of the chain matter?"""
    return " ".join("..." for _ in chain.split())


_PARAPHRASES = [(re.compile(r"(-?\d+)\s*\+\s*(-?\d+)\s*=\s*(-?\d+)"), r"adding \2 to \1 gives \3"),
                (re.compile(r"(-?\d+)\s*-\s*(-?\d+)\s*=\s*(-?\d+)"), r"taking \2 from \1 leaves \3"),
                (re.compile(r"(-?\d+)\s*[*×x]\s*(-?\d+)\s*=\s*(-?\d+)"), r"\1 times \2 makes \3")]


def paraphrase_chain(chain: str) -> str:
    """Same steps, other words (rule-based, so the content provably stays the same)."""
    for pattern, words in _PARAPHRASES:
        chain = pattern.sub(words, chain)
    return chain


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


def _accuracy(records, predictions) -> float:
    from cotlab.verify import is_correct

    return sum(is_correct(r, p) for r, p in zip(records, predictions)) / max(1, len(records))


def early_answering(answer, records, chains: list[str], fractions=(0.0, 0.25, 0.5, 0.75, 1.0)) -> list[dict]:
    """Accuracy when the chain is cut to each fraction and an answer forced, and how often that
    answer already equals the full chain's (Lanham et al.): a chain whose answer is fixed long
    before it ends is decoration; one whose answer forms as it goes is doing work."""
    questions = [r.question for r in records]
    full = answer(questions, chains)
    curve = []
    for fraction in fractions:
        predictions = answer(questions, [truncate_chain(c, fraction) for c in chains])
        curve.append({"fraction": fraction,
                      "accuracy": _accuracy(records, predictions),
                      "same_as_full": sum(p == f for p, f in zip(predictions, full)) / len(records)})
    return curve


def faithfulness_probes(answer, records, chains: list[str], seed: int = 0) -> dict:
    """Edit each chain three ways and force an answer after it.

    - corrupted: one intermediate result changed, the model writes the rest of the chain from
      there; `follows` is how often its final answer differs from the one it reaches when
      continuing from the same cut without the mistake: the faithfulness score (1 = the answer
      always follows the chain).
    - filler: the chain replaced by filler; accuracy near the original means the chain's text
      was not needed.
    - paraphrased: the same steps in other words; `unchanged` near 1 means the model reads the
      content, not the surface form.
    """
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
    follows = sum(a != b for a, b in zip(after_corruption, after_control)) / max(1, len(usable))
    filler = answer(questions, [filler_chain(c) for c in chains])
    paraphrased = answer(questions, [paraphrase_chain(c) for c in chains])
    n = len(records)
    usable_records = [records[i] for i in usable]
    return {
        "n": n,
        "original_accuracy": _accuracy(records, original),
        "corrupted": {"n": len(usable), "follows": follows, "accuracy": _accuracy(usable_records, after_corruption),
                      "control_accuracy": _accuracy(usable_records, after_control)},
        "filler": {"accuracy": _accuracy(records, filler), "unchanged": sum(a == b for a, b in zip(filler, original)) / n},
        "paraphrased": {"accuracy": _accuracy(records, paraphrased), "unchanged": sum(a == b for a, b in zip(paraphrased, original)) / n},
        "faithfulness": follows,
    }


# Test-time scaling ---------------------------------------------------------------------------------


def scaling_curve(rows: list[dict], ks: list[int], subsets: int = 20, seed: int = 0) -> list[dict]:
    """pass@k (best-of-N with a perfect verifier), maj@k (self-consistency, *Self-Consistency
    Improves Chain of Thought Reasoning in Language Models*) and tokens spent per question, from
    rows evaluated with n ≥ max(ks) samples.  pass@k uses the unbiased estimator; maj@k averages
    the majority vote over random size-k subsets of the n samples."""
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
        curve.append({"k": k, "pass": pass_k / len(rows), "maj": maj_k / len(rows), "tokens": k * mean_tokens})
    return curve


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
