"""Making reasoning data: rejection sampling, STaR and the long/short CoT mixture, verified and saved.

- `gold_rationales`: the dataset's own chains that pass the whole-chain check, and why the others failed.
- `reject_sample`: k samples per question from a teacher (cotlab.teachers), keep the distinct ones
  whose answer verifies and whose chain is right (*Large Language Models Are Reasoning Teachers*;
  *Scaling Relationship on Learning Mathematical Reasoning with Large Language Models*).
- `star`: for questions the model fails, sample again with the gold answer as a hint and keep
  verified rationales that compute the hinted answer rather than state it, stored without the
  hint (*STaR: Bootstrapping Reasoning With Reasoning*).
- `shorten` and `mix_long_short`: structure-preserving short rewrites mixed with the long
  chains (*Long-Short Chain-of-Thought Mixture Supervised Fine-Tuning*).
- `save_dataset`: TRL prompt/completion rows plus a data card that counts what each filter removed.

Every row written for training passes `cotlab.chains.chain_fault` (it computes, every step is
right, its last computed value is the gold answer); each filter's removals are counted under
one of `FILTERS`' names, so a data card says what was thrown away and why.

Every generation stage appends one line per question to a JSONL log as it goes, so a killed
run resumes where it stopped without duplicating or losing a question.
"""

from __future__ import annotations

import json
import random
import re
from collections import Counter
from pathlib import Path

from cotlab import CotlabError
from cotlab.generate import SamplingConfig
from cotlab.io import append_jsonl, atomic_write_json, read_jsonl, repair_torn_tail, write_jsonl
from cotlab.progress import progress_bar
from cotlab.prompts import build_messages, sft_example
from cotlab.chains import (ANSWER_NOT_A_NUMBER, ARITHMETIC_ERROR, arithmetic_steps, chain_fault, LAST_VALUE_NOT_ANSWER,
                           explain_steps, NO_CALCULATION, numbers_in, prune_to_calculations,
                           to_fraction)
from cotlab.verify import extract_answer, is_correct

# Rationales -------------------------------------------------------------------------------------

_THINK = re.compile(r"<think>(.*?)(?:</think>|$)", re.DOTALL)
_TRAILING_ANSWER = re.compile(r"(\n\s*(?:<answer>.*|####.*|\**(?:final )?answer\**\s*[:is].*))+\s*$", re.IGNORECASE | re.DOTALL)
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


# What each filter is called in logs and data cards, in the order the filters run.  The chain
# faults are `cotlab.chains.chain_fault`'s; "enough kept" is the per-question cap, not a fault.
# "unfinished" is a sample cut off by max_new_tokens (or longer than max_tokens); "not shorter" is
# a long chain's short rewrite that saves nothing (`shorten`).
UNFINISHED, WRONG_ANSWER, HINT_COPIED, DUPLICATE, ENOUGH_KEPT, NO_CHAIN, NOT_SHORTER = (
    "unfinished", "wrong answer", "hint copied", "duplicate", "enough kept", "no chain", "not shorter")
FILTERS = (NO_CHAIN, UNFINISHED, WRONG_ANSWER, NO_CALCULATION, ARITHMETIC_ERROR, LAST_VALUE_NOT_ANSWER, ANSWER_NOT_A_NUMBER,
           HINT_COPIED, NOT_SHORTER, DUPLICATE, ENOUGH_KEPT)


def hint_copied(rationale: str, answer: str, question: str) -> bool:
    """STaR's risk: a chain that writes the hinted answer down instead of computing it.  True when
    the chain mentions the hint, or states the answer before any step computes it (as a number
    in the text or an operand).  An answer that is also a number of the question cannot be told
    from a use of the question, so it is never called copied."""
    if _HINT_LEAK.search(rationale):
        return True
    try:
        gold = to_fraction(answer.strip().rstrip("."))
    except ValueError:
        return False
    if gold in {value for value, _ in numbers_in(question)}:
        return False
    derived_at = next((step.number_spans[-1][0] for step in arithmetic_steps(rationale) if step.result == gold), len(rationale))
    return any(value == gold for value, start in numbers_in(rationale) if start < derived_at)


def _judge(record, samples, method, teacher_name, sampling, max_per_question, max_tokens, hint=False) -> dict:
    """Verify each sample; keep up to max_per_question distinct rationales whose answer and whole
    chain are right (and, for STaR, that compute the hinted answer)."""
    accepted, seen, judged = [], set(), []
    for sample in samples:
        prediction = extract_answer(sample.text)
        correct = is_correct(record, prediction)
        rationale = strip_answer(sample.text)
        reason = None
        if sample.tokens > max_tokens or not sample.finished:
            reason = UNFINISHED
        elif not correct:
            reason = WRONG_ANSWER
        elif fault := chain_fault(rationale, record.answer):
            reason = fault
        elif hint and hint_copied(rationale, record.answer, record.question):
            reason = HINT_COPIED
        elif normalized(rationale) in seen:
            reason = DUPLICATE
        elif len(accepted) >= max_per_question:
            reason = ENOUGH_KEPT
        judged.append({"prediction": prediction, "correct": correct, "tokens": sample.tokens, "rejected": reason})
        if reason is None:
            seen.add(normalized(rationale))
            accepted.append(rationale_row(record, rationale, method, teacher_name, sampling.temperature, sample.tokens))
    return {"source_id": record.id, "method": method, "teacher": teacher_name, "temperature": sampling.temperature,
            "k": sampling.k, "n_correct": sum(j["correct"] for j in judged),
            # Right answers, and what survives every filter: a right answer with no working is not kept.
            "correct_rate": sum(j["correct"] for j in judged) / len(samples), "acceptance": len(accepted) / len(samples),
            "samples": judged, "accepted": accepted}


def removal_counts(log_rows: list[dict]) -> dict[str, int]:
    """How many samples each filter removed, over sampling logs (`reject_sample`, `star`), in `FILTERS` order."""
    return _in_filter_order(Counter(s["rejected"] for log in log_rows for s in log["samples"] if s["rejected"]))


def _in_filter_order(counts: Counter) -> dict[str, int]:
    order = {reason: i for i, reason in enumerate(FILTERS)}  # a reason not in FILTERS goes last
    return {reason: counts[reason] for reason in sorted(counts, key=lambda r: order.get(r, len(FILTERS))) if counts[reason]}


def merged_counts(*counts: dict[str, int]) -> dict[str, int]:
    """Removal counts of several stages added up, in `FILTERS` order."""
    return _in_filter_order(sum((Counter(c) for c in counts), Counter()))


def gold_rationales(records) -> tuple[list[dict], dict[str, int]]:
    """The dataset's own chains as training rows, and how many each filter removed: a record with
    no chain, a chain whose stated answer is not the gold, or one that fails the whole-chain
    check (gsm_symbolic's rounded '6 x 0.6666666666666666 = 4.0', a chain whose steps carry units
    the checker cannot read) is counted, never written."""
    rows, removed = [], Counter()
    for record in records:
        rationale = strip_answer(record.rationale or "")
        stated = extract_answer(record.rationale, strict=True) if record.rationale else None  # "#### 14", not a last number
        if not rationale:
            removed[NO_CHAIN] += 1
        elif stated is not None and not is_correct(record, stated):
            removed[WRONG_ANSWER] += 1
        elif fault := chain_fault(rationale, record.answer):
            removed[fault] += 1
        else:
            rows.append(rationale_row(record, rationale, "gold", "gold", None, None))
    return rows, _in_filter_order(removed)


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


def shorten(rows: list[dict], records_by_id: dict, teacher=None, sampling: SamplingConfig | None = None
            ) -> tuple[list[dict], dict[str, int]]:
    """Short rewrites of long rationales that are shorter and pass the whole-chain check
    themselves, and why the other rows got none.  With a teacher, it rewrites (LS-Mixture);
    without one, `prune_to_calculations`."""
    if teacher is not None:
        conversations = [[{"role": "user", "content": SHORTEN_PROMPT.format(question=r["question"], rationale=r["rationale"])}] for r in rows]
        rewrites = [samples[0].text for samples in teacher.complete(conversations, sampling or SamplingConfig(max_new_tokens=256))]
    else:
        rewrites = [prune_to_calculations(r["rationale"]) for r in rows]
    short, removed = [], Counter()
    for row, rewrite in zip(rows, rewrites):
        rewrite = strip_answer(rewrite)
        fault = NOT_SHORTER if len(rewrite) >= len(row["rationale"]) else chain_fault(rewrite, records_by_id[row["source_id"]].answer)
        if fault:
            removed[fault] += 1
        else:
            short.append({**row, "rationale": rewrite, "method": row["method"] + "+short",
                          "teacher": teacher.name if teacher else "prune", "long_chars": len(row["rationale"])})
    return short, _in_filter_order(removed)


def explained(rows: list[dict]) -> list[dict]:
    """Each row's chain in its long form (`cotlab.chains.explain_steps`), marked '+explained';
    rows whose long form would fail the whole-chain check are left out."""
    long = [{**row, "rationale": explain_steps(row["rationale"]), "method": row["method"] + "+explained"} for row in rows]
    return [row for row in long if chain_fault(row["rationale"], row["answer"]) is None]


def mix_long_short(long_rows: list[dict], short_rows: list[dict], short_fraction: float = 0.5, seed: int = 0) -> list[dict]:
    """One rationale per (question, long rationale): for round(short_fraction × those with a short
    form) of them, chosen at random, the short form; the long one otherwise.  An exact count, not a
    coin per row, so a small set still holds the share asked for."""
    if not 0 <= short_fraction <= 1:
        raise CotlabError(f"short_fraction must be in [0, 1], got {short_fraction}")
    short_by_key = {(r["source_id"], r.get("long_chars")): r for r in short_rows}
    with_short = [i for i, row in enumerate(long_rows) if (row["source_id"], len(row["rationale"])) in short_by_key]
    chosen = set(random.Random(seed).sample(with_short, round(short_fraction * len(with_short))))
    return [short_by_key[(row["source_id"], len(row["rationale"]))] if i in chosen else row for i, row in enumerate(long_rows)]


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


def data_card(name: str, rows: list[dict], log_rows: list[dict] | None = None, removed: dict[str, int] | None = None) -> dict:
    """What a saved set holds and how it was made; `removed`: how many candidate rows each filter
    (`FILTERS`) threw away before these were kept."""
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
        "removed": dict(removed or {}),
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


def save_dataset(rows: list[dict], out_dir: str | Path, name: str, log_rows: list[dict] | None = None,
                 removed: dict[str, int] | None = None) -> dict:
    """Save a training set three ways: a `datasets` folder (what TRL loads), JSONL (what a person
    reads), and the raw rows with provenance; plus a data card that counts what each filter
    removed (`removed`, from the producer, plus the duplicates dropped here).  Returns the card.

    Every row is checked again here, whatever made it: a row that fails the whole-chain check
    (`cotlab.chains.chain_fault`) is an error, not a silent drop, since every producer should
    have filtered and counted it already."""
    import datasets

    faults = [(r, chain_fault(r["rationale"], r["answer"])) for r in rows]
    bad = [(r, fault) for r, fault in faults if fault]
    if bad:
        row, fault = bad[0]
        raise CotlabError(f"dataset '{name}': {len(bad)} row(s) fail the whole-chain check, e.g. {row['source_id']} "
                          f"({fault}): {row['rationale'][:120]!r}")
    if not rows:
        why = f" (removed: {', '.join(f'{n} {reason}' for reason, n in removed.items())})" if removed else ""
        raise CotlabError(f"dataset '{name}' is empty: nothing verified{why} (raise k or the temperature, or use the gold teacher)")
    out = Path(out_dir)
    unique = dedupe(rows)
    sft_rows = to_sft_rows(unique)
    datasets.Dataset.from_list(sft_rows).save_to_disk(str(out / name))
    write_jsonl(out / f"{name}.jsonl", sft_rows)
    write_jsonl(out / f"{name}.rows.jsonl", unique)
    card = data_card(name, unique, log_rows, merged_counts(removed or {}, {DUPLICATE: len(rows) - len(unique)}))
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
        rows, removed = gold_rationales(records)
        return save_dataset(rows, out, name, removed=removed)
    logs = reject_sample(teacher, records, sampling, out / "rejection.log.jsonl", max_per_question, chunk_size=chunk_size)
    star_logs = []
    if use_star:
        failed = [r for r in records if r.id in failed_ids(logs)]
        star_logs = star(teacher, failed, sampling, out / "star.log.jsonl", chunk_size=chunk_size)
    return save_dataset(accepted(logs + star_logs), out, name, logs, removed=removal_counts(logs + star_logs))
