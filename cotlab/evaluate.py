"""Evaluation: accuracy, pass@k, majority vote and completion length on a list of records."""

from __future__ import annotations

import json
import math
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from cotlab import CotlabError
from cotlab.generate import GenerationStats, SamplingConfig, choose_backend, generate, generate_with, vllm_dtype
from cotlab.io import atomic_write_json, read_jsonl, set_aside, write_jsonl
from cotlab.models import load_model, load_tokenizer, trained_in_4bit, weights_digest, weights_dtype
from cotlab.prompts import build_messages, render_prompt
from cotlab.stats import wilson_interval
from cotlab.verify import format_ok, grade, is_correct


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from n samples with c correct (Chen et al., *Evaluating Large Language
    Models Trained on Code*): 1 - C(n-c, k) / C(n, k)."""
    if k > n:
        raise ValueError(f"pass@{k} needs at least {k} samples, got {n}")
    if n - c < k:
        return 1.0
    return 1.0 - math.comb(n - c, k) / math.comb(n, k)


def majority_vote(predictions: list[str | None]) -> str | None:
    """The most common non-empty answer; ties go to the answer seen first (self-consistency)."""
    votes = Counter(p for p in predictions if p)
    if not votes:
        return None
    best = max(votes.values())
    return next(p for p in predictions if p and votes[p] == best)


def binomial_stderr(p: float, n: int) -> float:
    return math.sqrt(p * (1 - p) / n) if n else 0.0


def accuracy_summary(rows: list[dict]) -> dict:
    """Strict `accuracy` (an answer the completion committed to) beside `accuracy_lenient` (also
    crediting the last number of an untagged or cut-off completion), with its standard error and
    Wilson 95% interval.  The gap between the two is how much a last-number grader would flatter."""
    n = len(rows)
    right = sum(bool(r["correct"]) for r in rows)
    accuracy = right / n
    return {"n": n, "accuracy": accuracy, "accuracy_lenient": sum(bool(r["correct_lenient"]) for r in rows) / n,
            "accuracy_stderr": binomial_stderr(accuracy, n), "interval": list(wilson_interval(right, n))}


@dataclass
class EvalResult:
    rows: list[dict]
    summary: dict


def evaluate(model, tokenizer, records, style: str = "think", sampling: SamplingConfig | None = None,
             exemplars=None, progress: bool = True) -> EvalResult:
    """Generate k completions per record with cotlab's decoder on a loaded model, and score them
    (`score_completions`).  `evaluate_vllm` is the same with vLLM on a model given by path."""
    sampling = sampling or SamplingConfig()
    stats = GenerationStats()
    completions = generate(model, tokenizer, eval_prompts(tokenizer, records, style, exemplars), sampling, progress=progress, stats=stats)
    return score_completions(records, completions, style, sampling, stats, dtype=weights_dtype(model), backend="hf")


def evaluate_vllm(model: str, records, adapter: str | None = None, style: str = "think", sampling: SamplingConfig | None = None,
                  exemplars=None, progress: bool = True) -> EvalResult:
    """`evaluate` with vLLM (GPU): the model by name or path, an adapter chain merged first
    (`cotlab.generate.vllm_model`)."""
    sampling = sampling or SamplingConfig()
    stats = GenerationStats()
    prompts = eval_prompts(load_tokenizer(model), records, style, exemplars)
    completions = generate_with("vllm", prompts, sampling, model=model, adapter=adapter, progress=progress, stats=stats)
    return score_completions(records, completions, style, sampling, stats, dtype=vllm_dtype(), backend="vllm")


def eval_prompts(tokenizer, records, style: str, exemplars=None) -> list[str]:
    if not records:
        raise CotlabError("nothing to evaluate: the record list is empty")
    return [render_prompt(tokenizer, build_messages(r.question, style, exemplars)) for r in records]


def score_completions(records, completions, style: str, sampling: SamplingConfig, stats: GenerationStats, dtype: str,
                      backend: str) -> EvalResult:
    """Score k completions per record.

    `correct`/`prediction` describe the first sample (greedy when temperature is 0) under the
    strict reading (`verify.extract_answer(strict=True)`: no last-number fallback), and
    `correct_lenient`/`prediction_lenient` under the lenient one; with k > 1 each row also has
    every sample (strict), its majority vote, and pass@k.
    """
    rows = []
    for record, samples in zip(records, completions):
        grades = [grade(record, s.text) for s in samples]
        predictions = [g["prediction"] for g in grades]
        correct = [g["correct"] for g in grades]
        first = samples[0]
        row = {
            "id": record.id,
            "question": record.question,
            "gold": record.answer,
            **grades[0],
            "completion": first.text,
            "completion_tokens": first.tokens,
            "finished": first.finished,
            "format_ok": format_ok(first.text),
        }
        if sampling.k > 1:
            vote = majority_vote(predictions)
            row.update(
                samples=[{"prediction": p, "correct": c, "tokens": s.tokens, "completion": s.text}
                         for p, c, s in zip(predictions, correct, samples)],
                n_correct=sum(correct),
                majority=vote,
                majority_correct=is_correct(record, vote),
            )
        rows.append(row)
    return EvalResult(rows, {**summarize(rows, sampling, style, stats), "dtype": dtype, "backend": backend})


def summarize(rows: list[dict], sampling: SamplingConfig, style: str, stats: GenerationStats | None = None) -> dict:
    """`accuracy` is strict and `accuracy_lenient` sits beside it (see `accuracy_summary`); before
    the two were split, `accuracy` was the lenient figure."""
    n = len(rows)
    summary = {
        **accuracy_summary(rows),
        "style": style,
        "mean_completion_tokens": sum(r["completion_tokens"] for r in rows) / n,
        "clipped_ratio": sum(not r["finished"] for r in rows) / n,
        "format_ok_ratio": sum(r["format_ok"] for r in rows) / n,
        "sampling": sampling.to_dict(),
    }
    if sampling.k > 1:
        summary[f"pass@{sampling.k}"] = sum(pass_at_k(sampling.k, r["n_correct"], sampling.k) for r in rows) / n
        summary[f"maj@{sampling.k}"] = sum(r["majority_correct"] for r in rows) / n
    if stats is not None:
        summary["generated_tokens"] = stats.tokens
        summary["generation_seconds"] = round(stats.seconds, 2)
        summary["tokens_per_second"] = round(stats.tokens_per_second, 1)
    return summary


def write_eval(out_dir: str | Path, result: EvalResult, **context) -> Path:
    """Write predictions.jsonl and summary.json; refuse to overwrite an earlier evaluation."""
    out = Path(out_dir)
    if (out / "summary.json").exists():
        raise CotlabError(f"{out} already holds an evaluation (summary.json): choose another --out")
    write_jsonl(out / "predictions.jsonl", result.rows)
    atomic_write_json(out / "summary.json", {**result.summary, **context})
    return out


def load_eval(out_dir: str | Path) -> EvalResult | None:
    """An evaluation written by `write_eval`, or None when the folder holds none."""
    out = Path(out_dir)
    if not (out / "summary.json").is_file():
        return None
    return EvalResult(read_jsonl(out / "predictions.jsonl"), json.loads((out / "summary.json").read_text()))


def answer_changes(before: list[dict], after: list[dict]) -> dict[str, int]:
    """How a training stage moved per-question correctness on the same questions: fixed (wrong →
    right), broken (right → wrong), kept right, kept wrong.  *Scalpel vs. Hammer* contrasts RL,
    which mostly keeps what was right and fixes a few, with SFT, which rewrites more answers."""
    by_id = {r["id"]: r["correct"] for r in before}
    missing = [r["id"] for r in after if r["id"] not in by_id]
    if missing or len(by_id) != len(after):
        raise CotlabError(f"answer_changes needs the same questions before and after ({len(missing)} differ)")
    counts = {"fixed": 0, "broken": 0, "kept_right": 0, "kept_wrong": 0}
    for row in after:
        was, now = by_id[row["id"]], row["correct"]
        counts["fixed" if now and not was else "broken" if was and not now else "kept_right" if now else "kept_wrong"] += 1
    return counts


def questions_digest(records) -> str:
    """What identifies the questions an evaluation asked, in order: each record's id, question and
    gold answer (ids alone can coincide: `task-seed-index` across task options, `stem-N` across files)."""
    import hashlib

    text = json.dumps([[r.id, r.question, r.answer] for r in records])
    return hashlib.sha1(text.encode()).hexdigest()[:16]


def _made_with(model, adapter, style, exemplars, sampling: SamplingConfig, load_in_4bit, backend) -> dict:
    """What decides an evaluation's answers, apart from its questions (the backend too: vLLM's
    kernels round differently, so its greedy answers are not HF's)."""
    load_in_4bit = trained_in_4bit(adapter) if load_in_4bit is None else load_in_4bit
    return {"model": model, "weights": weights_digest(adapter, model), "style": style,
            "exemplars": [list(e) for e in exemplars] if exemplars else None, "sampling": sampling.to_dict(),
            "load_in_4bit": load_in_4bit, "backend": choose_backend(backend, load_in_4bit)}


def _as_recorded(summary: dict) -> dict:
    """A summary as `_made_with` would describe it: one written before the backend was recorded
    was made by cotlab's own decoder, the only backend there was."""
    return {"backend": "hf", **summary}


def earlier_rows(out_dir: str | Path, records, model: str | None = None, adapter: str | None = None, style: str = "think",
                 sampling: SamplingConfig | None = None, backend: str = "hf") -> EvalResult | None:
    """Another lesson's evaluation read back for `records` alone, without touching it: when out_dir
    holds an evaluation of the same model, weights, style, greedy settings and backend whose
    questions include every one of `records` (a larger held-out set of the same task and data seed
    starts with the smaller one), its rows for them, in their order, with a summary of those rows;
    else None.  Only `batch_size` may differ: it sets how many sequences share a forward pass, not
    what they say.  Why not evaluate_to on that folder: an evaluation of other questions there would
    be set aside."""
    sampling = sampling or SamplingConfig()
    found = load_eval(out_dir)
    if found is None:
        return None
    wanted = _made_with(model, adapter, style, None, sampling, None, backend)
    recorded = _as_recorded(found.summary)
    if isinstance(recorded.get("sampling"), dict):
        recorded["sampling"] = {**recorded["sampling"], "batch_size": sampling.batch_size}
    if any(recorded.get(key) != value for key, value in wanted.items()):
        return None
    by_id = {row["id"]: row for row in found.rows}
    rows = [by_id.get(r.id) for r in records]
    if any(row is None or (row["question"], row["gold"]) != (r.question, r.answer) for row, r in zip(rows, records)):
        return None
    return EvalResult(rows, {**summarize(rows, sampling, style), "read_from": str(out_dir), **wanted})


def evaluate_to(out_dir: str | Path, records, model: str | None = None, adapter: str | None = None, loaded=None,
                style: str = "think", sampling: SamplingConfig | None = None, exemplars=None, progress: bool = True,
                load_in_4bit: bool | None = None, backend: str = "hf", **context) -> EvalResult:
    """Evaluate and write the result to out_dir; when out_dir already holds this very evaluation
    (same model, weights, questions, style, exemplars, sampling, quantisation and backend: a resumed
    run, or an earlier notebook's), read it back without loading the model.  An evaluation made
    otherwise is set aside as out_dir.earlier-N, never overwritten, and redone; it says so.
    load_in_4bit None: as the adapter was trained (`cotlab.models.load_model`).  backend: "hf",
    "vllm" or "auto" (`cotlab.generate.choose_backend`); vLLM loads the model by name, not `loaded`."""
    sampling = sampling or SamplingConfig()
    made_with = {**_made_with(model, adapter, style, exemplars, sampling, load_in_4bit, backend), "questions_digest": questions_digest(records)}
    found = load_eval(out_dir)
    if found is not None:
        recorded = _as_recorded(found.summary)
        differ = [key for key, value in made_with.items() if recorded.get(key) != value]
        if not differ:
            return found
        print(f"{out_dir} held an evaluation made otherwise ({', '.join(differ)}): kept as {set_aside(out_dir)}, evaluating afresh")
    if made_with["backend"] == "vllm":
        result = evaluate_vllm(model, records, adapter, style=style, sampling=sampling, exemplars=exemplars, progress=progress)
    else:
        lm, tokenizer = loaded or load_model(model, adapter=adapter, load_in_4bit=made_with["load_in_4bit"])
        result = evaluate(lm, tokenizer, records, style=style, sampling=sampling, exemplars=exemplars, progress=progress)
    context = {"adapter": adapter, **made_with, **context}
    write_eval(out_dir, result, **context)
    return EvalResult(result.rows, {**result.summary, **context})  # as a read-back would give it
