"""Making reasoning data: rejection sampling, STaR and the long/short CoT mixture, verified and saved.

- `reject_sample`: k samples per question from a teacher (cotlab.teachers), keep the distinct ones
  whose answer verifies (*Large Language Models Are Reasoning Teachers*; *Scaling Relationship on
  Learning Mathematical Reasoning with Large Language Models*).
- `star`: for questions the model fails, sample again with the gold answer as a hint and keep
  verified rationales, stored without the hint (*STaR: Bootstrapping Reasoning With Reasoning*).
- `shorten` and `mix_long_short`: structure-preserving short rewrites mixed with the long
  chains (*Long-Short Chain-of-Thought Mixture Supervised Fine-Tuning*).
- `save_dataset`: TRL prompt/completion rows plus a data card.

Every generation stage appends one line per question to a JSONL log as it goes, so a killed
run resumes where it stopped without duplicating or losing a question.
"""

from __future__ import annotations

import json
import random
import re
from pathlib import Path

from cotlab import CotlabError
from cotlab.generate import SamplingConfig
from cotlab.io import append_jsonl, atomic_write_json, read_jsonl, repair_torn_tail, write_jsonl
from cotlab.progress import progress_bar
from cotlab.prompts import build_messages, sft_example
from cotlab.chains import check_steps, prune_to_calculations
from cotlab.verify import extract_answer, is_correct

# Rationales -------------------------------------------------------------------------------------

_THINK = re.compile(r"<think>(.*?)(?:</think>|$)", re.DOTALL)
_TRAILING_ANSWER = re.compile(r"(\n\s*(?:<answer>.*|####.*|\**(?:final )?answer\**\s*[:is].*))+\s*$", re.IGNORECASE | re.DOTALL)
_CALCULATION = re.compile(r"\d\s*[-+*/×x÷]\s*\(?-?\d")  # a rationale must compute something, not restate the answer
_HINT_LEAK = re.compile(r"correct answer is|the hint|we are told the answer|given answer", re.IGNORECASE)


def strip_answer(text: str) -> str:
    """The reasoning part of a completion: inside <think> if present, minus any final-answer line."""
    inner = _THINK.search(text)
    text = inner.group(1) if inner else text
    return _TRAILING_ANSWER.sub("", text.strip()).strip()


def rationale_row(record, rationale: str, method: str, teacher: str, temperature, tokens, **extra) -> dict:
    return {"source_id": record.id, "question": record.question, "answer": record.answer, "rationale": rationale,
            "method": method, "teacher": teacher, "temperature": temperature, "tokens": tokens,
            "verified": True, "source": record.source, **extra}


def normalized(text: str) -> str:
    return " ".join(text.lower().split())


# Resumable generation ---------------------------------------------------------------------------


def _resume(log_path: Path, config: dict) -> set[str]:
    """Ids already done in an earlier (possibly killed) run with the same config."""
    config_path = log_path.with_suffix(".config.json")
    if config_path.is_file():
        earlier = json.loads(config_path.read_text())
        if earlier != config:
            raise CotlabError(f"{log_path} was written with other parameters ({config_path}); choose another output folder")
    else:
        atomic_write_json(config_path, config)
    repair_torn_tail(log_path)
    return {row["source_id"] for row in read_jsonl(log_path)} if log_path.is_file() else set()


def _sample_and_log(teacher, records, conversations, sampling, log_path, config, judge, chunk_size, progress):
    done = _resume(log_path, config)
    todo = [(r, c) for r, c in zip(records, conversations) if r.id not in done]
    bar = progress_bar(len(records), config["method"], disable=not progress, initial=len(records) - len(todo), unit="questions")
    for start in range(0, len(todo), chunk_size):
        chunk = todo[start : start + chunk_size]
        outputs = teacher.complete([c for _, c in chunk], sampling)
        for (record, _), samples in zip(chunk, outputs):
            append_jsonl(log_path, {**judge(record, samples), "backend": getattr(teacher, "backend", None)})
        bar.update(len(chunk))
    bar.close()
    by_id = {row["source_id"]: row for row in read_jsonl(log_path)}
    return [by_id[r.id] for r in records if r.id in by_id]


def _judge(record, samples, method, teacher_name, sampling, max_per_question, max_tokens, hint=False) -> dict:
    """Verify each sample; keep up to max_per_question distinct correct rationales."""
    accepted, seen, judged = [], set(), []
    for sample in samples:
        prediction = extract_answer(sample.text)
        correct = is_correct(record, prediction)
        rationale = strip_answer(sample.text)
        reason = None
        if not correct:
            reason = "wrong answer"
        elif not _CALCULATION.search(rationale):
            reason = "no calculation"
        elif wrong_steps(record.source, rationale):
            reason = "wrong step"
        elif sample.tokens > max_tokens or not sample.finished:
            reason = "too long"
        elif hint and _HINT_LEAK.search(rationale):
            reason = "mentions the hint"
        elif normalized(rationale) in seen:
            reason = "duplicate"
        elif len(accepted) >= max_per_question:
            reason = "enough kept"
        judged.append({"prediction": prediction, "correct": correct, "tokens": sample.tokens, "rejected": reason})
        if reason is None:
            seen.add(normalized(rationale))
            accepted.append(rationale_row(record, rationale, method, teacher_name, sampling.temperature, sample.tokens))
    return {"source_id": record.id, "method": method, "teacher": teacher_name, "temperature": sampling.temperature,
            "k": sampling.k, "n_correct": sum(j["correct"] for j in judged),
            # Right answers, and what survives every filter: a right answer with no working is not kept.
            "correct_rate": sum(j["correct"] for j in judged) / len(samples), "acceptance": len(accepted) / len(samples),
            "samples": judged, "accepted": accepted}


def reject_sample(teacher, records, sampling: SamplingConfig, log_path: str | Path, max_per_question: int = 4,
                  max_tokens: int = 1024, chunk_size: int = 16, progress: bool = True) -> list[dict]:
    """Sample k rationales per question in the think format and keep the verified, distinct ones.

    Returns one log row per question: correct and accepted rates, every sample's verdict, accepted rows.
    """
    conversations = [build_messages(r.question, "think") for r in records]
    config = {"method": "rejection", "teacher": teacher.name, "sampling": sampling.to_dict(), "max_per_question": max_per_question,
              "max_tokens": max_tokens}
    judge = lambda r, s: _judge(r, s, "rejection", teacher.name, sampling, max_per_question, max_tokens)  # noqa: E731
    return _sample_and_log(teacher, records, conversations, sampling, Path(log_path), config, judge, chunk_size, progress)


STAR_HINT = "\n(Hint: the correct answer is {answer}. Work through the steps that lead to it.)"


def star(teacher, records, sampling: SamplingConfig, log_path: str | Path, max_per_question: int = 1,
         max_tokens: int = 1024, chunk_size: int = 16, progress: bool = True) -> list[dict]:
    """STaR rationalisation: ask again with the answer as a hint; keep verified rationales that
    do not lean on the hint.  The kept rows carry the question without the hint."""
    conversations = [build_messages(r.question + STAR_HINT.format(answer=r.answer), "think") for r in records]
    config = {"method": "star", "teacher": teacher.name, "sampling": sampling.to_dict(), "max_per_question": max_per_question,
              "max_tokens": max_tokens}
    judge = lambda r, s: _judge(r, s, "star", teacher.name, sampling, max_per_question, max_tokens, hint=True)  # noqa: E731
    return _sample_and_log(teacher, records, conversations, sampling, Path(log_path), config, judge, chunk_size, progress)


def accepted(log_rows: list[dict]) -> list[dict]:
    return [row for log in log_rows for row in log["accepted"]]


def failed_ids(log_rows: list[dict]) -> set[str]:
    return {log["source_id"] for log in log_rows if not log["accepted"]}


# Long/short mixture -----------------------------------------------------------------------------

SHORTEN_PROMPT = (
    "Rewrite the solution below as briefly as possible. Keep every calculation, in the same order; "
    "drop the explanations.\n\nProblem: {question}\n\nSolution:\n{rationale}"
)


def shorten(rows: list[dict], records_by_id: dict, teacher=None, sampling: SamplingConfig | None = None) -> list[dict]:
    """Short rewrites of long rationales that still verify and are shorter.  With a teacher, it
    rewrites (LS-Mixture); without one, `prune_to_calculations`."""
    if teacher is not None:
        conversations = [[{"role": "user", "content": SHORTEN_PROMPT.format(question=r["question"], rationale=r["rationale"])}] for r in rows]
        rewrites = [samples[0].text for samples in teacher.complete(conversations, sampling or SamplingConfig(max_new_tokens=256))]
    else:
        rewrites = [prune_to_calculations(r["rationale"]) for r in rows]
    short = []
    for row, rewrite in zip(rows, rewrites):
        rewrite = strip_answer(rewrite)
        last_number = extract_answer(rewrite)
        record = records_by_id[row["source_id"]]
        # The short form must still reach the gold answer on its own, be right step by step, and be shorter.
        if (rewrite and len(rewrite) < len(row["rationale"]) and is_correct(record, last_number)
                and not wrong_steps(record.source, rewrite)):
            short.append({**row, "rationale": rewrite, "method": row["method"] + "+short",
                          "teacher": teacher.name if teacher else "prune", "long_chars": len(row["rationale"])})
    return short


def mix_long_short(long_rows: list[dict], short_rows: list[dict], short_fraction: float = 0.5, seed: int = 0) -> list[dict]:
    """One rationale per (question, long rationale): its short form with probability short_fraction."""
    if not 0 <= short_fraction <= 1:
        raise CotlabError(f"short_fraction must be in [0, 1], got {short_fraction}")
    short_by_key = {(r["source_id"], r.get("long_chars")): r for r in short_rows}
    rng = random.Random(seed)
    mixed = []
    for row in long_rows:
        short = short_by_key.get((row["source_id"], len(row["rationale"])))
        mixed.append(short if short is not None and rng.random() < short_fraction else row)
    return mixed


# Filtering and saving ---------------------------------------------------------------------------


def dedupe(rows: list[dict]) -> list[dict]:
    seen, unique = set(), []
    for row in rows:
        key = (row["source_id"], normalized(row["rationale"]))
        if key not in seen:
            seen.add(key)
            unique.append(row)
    return unique


def to_sft_rows(rows: list[dict]) -> list[dict]:
    """TRL conversational prompt/completion rows, provenance kept in extra columns."""
    return [sft_example(r["question"], r["rationale"], r["answer"], source_id=r["source_id"], method=r["method"],
                        teacher=r["teacher"], temperature=-1.0 if r["temperature"] is None else float(r["temperature"]))
            for r in rows]


def data_card(name: str, rows: list[dict], log_rows: list[dict] | None = None) -> dict:
    lengths = sorted(len(r["rationale"].split()) for r in rows)
    card = {
        "name": name,
        "rows": len(rows),
        "questions": len({r["source_id"] for r in rows}),
        "methods": {m: sum(r["method"] == m for r in rows) for m in sorted({r["method"] for r in rows})},
        "teachers": sorted({r["teacher"] for r in rows}),
        "rationale_words": {"mean": sum(lengths) / len(lengths) if lengths else 0,
                            "median": lengths[len(lengths) // 2] if lengths else 0,
                            "histogram": _histogram(lengths)},
    }
    if log_rows:
        card["correct_rate"] = sum(log["correct_rate"] for log in log_rows) / len(log_rows)
        card["acceptance"] = sum(log["acceptance"] for log in log_rows) / len(log_rows)
        card["questions_with_a_kept_rationale"] = sum(bool(log["accepted"]) for log in log_rows) / len(log_rows)
        # What sampled the chains: hf, vllm or http ("hf+vllm" when a resumed run changed backend).
        backends = sorted({log.get("backend") or "hf" for log in log_rows})
        card["backend"] = "+".join(backends)
    return card


def _histogram(values: list[int], bins: int = 10) -> dict:
    if not values:
        return {}
    low, high = values[0], values[-1]
    width = max(1, -(-(high - low + 1) // bins))
    counts: dict[str, int] = {}
    for v in values:
        start = low + (v - low) // width * width
        counts[f"{start}-{start + width - 1}"] = counts.get(f"{start}-{start + width - 1}", 0) + 1
    return counts


# Tasks whose chains are pure arithmetic: every `a op b = r` step of a chain written as training
# data for them must be right, not only the final answer (a right answer reached through a wrong
# step teaches the wrong step).  Word problems keep their prose, rounding and units: final answer only.
ARITHMETIC_TASKS = ("chain_sum", "basic_arithmetic", "products", "decimal_arithmetic")


def wrong_steps(source: str, rationale: str) -> list[str]:
    """The wrong steps of a rationale for an arithmetic task (cotlab.chains); [] for other tasks."""
    task = source.removeprefix("rg:").split("?")[0]
    return check_steps(rationale) if task in ARITHMETIC_TASKS else []


def save_dataset(rows: list[dict], out_dir: str | Path, name: str, log_rows: list[dict] | None = None) -> dict:
    """Save a training set three ways: a `datasets` folder (what TRL loads), JSONL (what a person
    reads), and the raw rows with provenance; plus a data card.  Returns the card.

    Every row is checked again here, whatever made it: for an arithmetic task a row with a wrong
    step is an error, not a silent drop, since every producer should have filtered it already."""
    import datasets

    bad = [r for r in rows if wrong_steps(r.get("source", ""), r["rationale"])]
    if bad:
        raise CotlabError(f"dataset '{name}': {len(bad)} row(s) have a wrong arithmetic step, e.g. "
                          f"{wrong_steps(bad[0]['source'], bad[0]['rationale'])[0]!r} in {bad[0]['source_id']}")
    if not rows:
        raise CotlabError(f"dataset '{name}' is empty: nothing verified (raise k or the temperature, or use the gold teacher)")
    out = Path(out_dir)
    sft_rows = to_sft_rows(dedupe(rows))
    datasets.Dataset.from_list(sft_rows).save_to_disk(str(out / name))
    write_jsonl(out / f"{name}.jsonl", sft_rows)
    write_jsonl(out / f"{name}.rows.jsonl", rows)
    card = data_card(name, rows, log_rows)
    atomic_write_json(out / f"{name}.card.json", card)
    return card


def distill_to(out_dir: str | Path, records, teacher, sampling: SamplingConfig, name: str = "distilled",
               max_per_question: int = 4, chunk_size: int = 16, use_star: bool = False) -> dict:
    """Build and save one verified training set from `records` (what `cotlab distill` runs): the
    gold rationales for a gold teacher, else rejection sampling and optionally STaR on the
    questions left unsolved.  Resumable: the sampling logs in out_dir are picked up again."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if hasattr(teacher, "rationales"):  # the gold teacher needs no sampling
        return save_dataset(teacher.rationales(records), out, name)
    logs = reject_sample(teacher, records, sampling, out / "rejection.log.jsonl", max_per_question, chunk_size=chunk_size)
    rows = accepted(logs)
    if use_star:
        failed = [r for r in records if r.id in failed_ids(logs)]
        rows += accepted(star(teacher, failed, sampling, out / "star.log.jsonl", chunk_size=chunk_size))
    return save_dataset(rows, out, name, logs)
