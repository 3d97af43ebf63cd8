"""Making reasoning data: teachers, rejection sampling, STaR and the long/short CoT mixture.

- Teachers share one method, `complete(conversations, sampling)`: a local HF model
  (`LocalTeacher`), any OpenAI-compatible server (`HTTPTeacher`: vLLM, llama.cpp, Ollama,
  `transformers serve`, a hosted API), or the dataset's own gold rationales (`GoldTeacher`).
- `reject_sample`: k samples per question, keep the distinct ones whose answer verifies
  (*Large Language Models Are Reasoning Teachers*; *Scaling Relationship on Learning
  Mathematical Reasoning with Large Language Models*).
- `star`: for questions the model fails, sample again with the gold answer as a hint and keep
  verified rationales, stored without the hint (*STaR: Bootstrapping Reasoning With Reasoning*).
- `shorten` and `mix_long_short`: structure-preserving short rewrites mixed with the long
  chains (*Long-Short Chain-of-Thought Mixture Supervised Fine-Tuning*).

Every generation stage appends one line per question to a JSONL log as it goes, so a killed
run resumes where it stopped without duplicating or losing a question.
"""

from __future__ import annotations

import json
import random
import re
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

from pathlib import Path

from cotlab import CotlabError
from cotlab.generate import Completion, GenerationStats, SamplingConfig
from cotlab.io import append_jsonl, atomic_write_json, read_jsonl, repair_torn_tail, write_jsonl
from cotlab.prompts import build_messages, sft_example, think_completion
from cotlab.verify import extract_answer, is_correct

# Teachers ---------------------------------------------------------------------------------------


class LocalTeacher:
    """A local HF model (the embedded model by default; any hub id or folder on a GPU)."""

    def __init__(self, model: str = "embedded", adapter: str | None = None, loaded=None):
        from cotlab.models import load_model

        self.name = model + (f"+{Path(adapter).name}" if adapter else "")
        self.model, self.tokenizer = loaded or load_model(model, adapter=adapter)
        self.stats = GenerationStats()

    def complete(self, conversations: list[list[dict]], sampling: SamplingConfig, progress: bool = False) -> list[list[Completion]]:
        from cotlab.generate import generate
        from cotlab.prompts import render_prompt

        prompts = [render_prompt(self.tokenizer, c) for c in conversations]
        return generate(self.model, self.tokenizer, prompts, sampling, progress=progress, stats=self.stats)


class HTTPTeacher:
    """Any OpenAI-compatible chat-completions endpoint.  One request per sample (many servers
    ignore `n`), at most `concurrency` in flight, each retried on connection errors, timeouts
    and 429/5xx answers with exponential back-off."""

    def __init__(self, base_url: str, model: str, api_key: str | None = None, timeout: float = 120.0,
                 max_retries: int = 3, concurrency: int = 4):
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.name = f"http:{model}"
        self.model, self.api_key = model, api_key
        self.timeout, self.max_retries, self.concurrency = timeout, max_retries, concurrency
        self.stats = GenerationStats()

    def _request(self, messages: list[dict], sampling: SamplingConfig, seed: int) -> Completion:
        body = json.dumps({"model": self.model, "messages": messages, "max_tokens": sampling.max_new_tokens,
                           "temperature": sampling.temperature, "top_p": sampling.top_p, "seed": seed}).encode()
        headers = {"Content-Type": "application/json", **({"Authorization": f"Bearer {self.api_key}"} if self.api_key else {})}
        for attempt in range(self.max_retries + 1):
            try:
                request = urllib.request.Request(self.url, data=body, headers=headers, method="POST")
                with urllib.request.urlopen(request, timeout=self.timeout) as response:
                    answer = json.loads(response.read())
                choice = answer["choices"][0]
                tokens = (answer.get("usage") or {}).get("completion_tokens") or len(choice["message"]["content"].split())
                return Completion(choice["message"]["content"].strip(), tokens, choice.get("finish_reason") == "stop")
            except urllib.error.HTTPError as e:
                if e.code not in (408, 429) and e.code < 500 or attempt == self.max_retries:
                    raise CotlabError(f"teacher {self.url} answered HTTP {e.code}: {e.read()[:200]!r}") from None
            except (urllib.error.URLError, TimeoutError, ConnectionError) as e:
                if attempt == self.max_retries:
                    raise CotlabError(f"teacher {self.url} unreachable after {attempt + 1} tries: {e}") from None
            time.sleep(min(2**attempt, 30))
        raise AssertionError("unreachable")

    def complete(self, conversations: list[list[dict]], sampling: SamplingConfig, progress: bool = False) -> list[list[Completion]]:
        jobs = [(i, j) for i in range(len(conversations)) for j in range(sampling.k)]
        start = time.perf_counter()
        with ThreadPoolExecutor(self.concurrency) as pool:
            done = list(pool.map(lambda job: self._request(conversations[job[0]], sampling, sampling.seed + job[1]), jobs))
        self.stats.seconds += time.perf_counter() - start
        results: list[list[Completion]] = [[] for _ in conversations]
        for (i, _), completion in zip(jobs, done):
            results[i].append(completion)
            self.stats.tokens += completion.tokens
            self.stats.sequences += 1
        return results


class GoldTeacher:
    """The dataset's own rationales (GSM8K solutions, reasoning-gym answer_cot or scratchpads):
    the human-annotated baseline the distillation papers compare against."""

    name = "gold"

    def rationales(self, records) -> list[dict]:
        rows = []
        for record in records:
            if record.rationale and is_correct(record, extract_answer(record.rationale) or record.answer):
                rows.append(_row(record, _strip_answer(record.rationale), "gold", self.name, None, None))
        return rows


# Rationales -------------------------------------------------------------------------------------

_THINK = re.compile(r"<think>(.*?)(?:</think>|$)", re.DOTALL)
_TRAILING_ANSWER = re.compile(r"(\n\s*(?:<answer>.*|####.*|\**(?:final )?answer\**\s*[:is].*))+\s*$", re.IGNORECASE | re.DOTALL)
_CALCULATION = re.compile(r"\d\s*[-+*/×x÷]\s*\(?-?\d")  # a rationale must compute something, not restate the answer
_HINT_LEAK = re.compile(r"correct answer is|the hint|we are told the answer|given answer", re.IGNORECASE)


def _strip_answer(text: str) -> str:
    """The reasoning part of a completion: inside <think> if present, minus any final-answer line."""
    inner = _THINK.search(text)
    text = inner.group(1) if inner else text
    return _TRAILING_ANSWER.sub("", text.strip()).strip()


def _row(record, rationale: str, method: str, teacher: str, temperature, tokens, **extra) -> dict:
    return {"source_id": record.id, "question": record.question, "answer": record.answer, "rationale": rationale,
            "method": method, "teacher": teacher, "temperature": temperature, "tokens": tokens,
            "verified": True, "source": record.source, **extra}


def _normalized(text: str) -> str:
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
    from tqdm.auto import tqdm

    done = _resume(log_path, config)
    todo = [(r, c) for r, c in zip(records, conversations) if r.id not in done]
    bar = tqdm(total=len(records), initial=len(records) - len(todo), desc=config["method"], disable=not progress, leave=False)
    for start in range(0, len(todo), chunk_size):
        chunk = todo[start : start + chunk_size]
        outputs = teacher.complete([c for _, c in chunk], sampling)
        for (record, _), samples in zip(chunk, outputs):
            append_jsonl(log_path, judge(record, samples))
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
        rationale = _strip_answer(sample.text)
        reason = None
        if not correct:
            reason = "wrong answer"
        elif not _CALCULATION.search(rationale):
            reason = "no calculation"
        elif sample.tokens > max_tokens or not sample.finished:
            reason = "too long"
        elif hint and _HINT_LEAK.search(rationale):
            reason = "mentions the hint"
        elif _normalized(rationale) in seen:
            reason = "duplicate"
        elif len(accepted) >= max_per_question:
            reason = "enough kept"
        judged.append({"prediction": prediction, "correct": correct, "tokens": sample.tokens, "rejected": reason})
        if reason is None:
            seen.add(_normalized(rationale))
            accepted.append(_row(record, rationale, method, teacher_name, sampling.temperature, sample.tokens))
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


def prune_to_calculations(rationale: str) -> str:
    """A structure-preserving short form without a teacher: keep only the lines that compute
    something (an '=' with a digit), in order."""
    lines = [line.strip(" -•*") for line in rationale.splitlines()]
    kept = [line for line in lines if "=" in line and re.search(r"\d", line)]
    return "\n".join(kept) if kept else rationale


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
        rewrite = _strip_answer(rewrite)
        last_number = extract_answer(rewrite)
        record = records_by_id[row["source_id"]]
        # The short form must still reach the gold answer on its own and actually be shorter.
        if rewrite and len(rewrite) < len(row["rationale"]) and is_correct(record, last_number):
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
        key = (row["source_id"], _normalized(row["rationale"]))
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


def save_dataset(rows: list[dict], out_dir: str | Path, name: str, log_rows: list[dict] | None = None) -> dict:
    """Save a training set three ways: a `datasets` folder (what TRL loads), JSONL (what a person
    reads), and the raw rows with provenance; plus a data card.  Returns the card."""
    import datasets

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


# Command line -----------------------------------------------------------------------------------


def teacher_from(spec: str, url: str | None = None, api_key: str | None = None, concurrency: int = 4):
    if url:
        return HTTPTeacher(url, spec, api_key=api_key, concurrency=concurrency)
    if spec == "gold":
        return GoldTeacher()
    return LocalTeacher(spec)


def cmd_distill(args) -> int:
    from cotlab.data import load_records

    records = load_records(args.data, n=args.n, split="train", seed=args.seed)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    teacher = teacher_from(args.teacher, args.teacher_url, args.api_key, args.concurrency)
    if isinstance(teacher, GoldTeacher):
        rows, logs = teacher.rationales(records), None
    else:
        sampling = SamplingConfig(max_new_tokens=args.max_new_tokens, temperature=args.temperature, k=args.k,
                                  batch_size=args.batch_size, seed=args.seed)
        logs = reject_sample(teacher, records, sampling, out / "rejection.log.jsonl", args.max_per_question, chunk_size=args.chunk_size)
        rows = accepted(logs)
        if args.star:
            failed = [r for r in records if r.id in failed_ids(logs)]
            rows += accepted(star(teacher, failed, sampling, out / "star.log.jsonl", chunk_size=args.chunk_size))
        if teacher.stats.seconds:
            print(f"generated {teacher.stats.tokens} tokens in {teacher.stats.seconds:.1f}s ({teacher.stats.tokens_per_second:.1f} tokens/s)")
    card = save_dataset(rows, out, args.name, logs)
    print(json.dumps({k: v for k, v in card.items() if k != "rationale_words"}))
    print(f"wrote {out / args.name} (datasets), {out / args.name}.jsonl and {out / args.name}.card.json")
    return 0


def add_cli(subparsers) -> None:
    from cotlab.cli import positive_int

    p = subparsers.add_parser("distill", help="build a verified CoT training set (gold, rejection sampling, STaR)")
    p.add_argument("--data", required=True, help="task spec; questions come from its train split")
    p.add_argument("--teacher", default="embedded", help="gold, embedded, a folder or hub id, or a model name with --teacher-url")
    p.add_argument("--teacher-url", help="an OpenAI-compatible base URL, e.g. http://127.0.0.1:8000/v1")
    p.add_argument("--api-key")
    p.add_argument("--concurrency", type=positive_int, default=4, help="HTTP requests in flight")
    p.add_argument("--n", type=positive_int, default=100)
    p.add_argument("--k", type=positive_int, default=4)
    p.add_argument("--temperature", type=float, default=0.7)
    p.add_argument("--max-new-tokens", type=positive_int, default=256)
    p.add_argument("--batch-size", type=positive_int, default=16)
    p.add_argument("--chunk-size", type=positive_int, default=16, help="questions per written chunk")
    p.add_argument("--max-per-question", type=positive_int, default=4)
    p.add_argument("--star", action="store_true", help="rationalise failed questions with the answer as a hint")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--name", default="distilled")
    p.add_argument("--out", required=True, help="output folder; rerunning with the same parameters resumes")
    p.set_defaults(func=cmd_distill)


# Preference pairs (for DPO) ---------------------------------------------------------------------

PAIR_MODES = ("correct_vs_wrong", "long_vs_short", "short_vs_long")


def preference_pairs(teacher, records, sampling: SamplingConfig, mode: str = "correct_vs_wrong", seed: int = 0) -> tuple[list[dict], dict]:
    """Sample k chains per question from `teacher` and pair them (see `pairs_from_samples`)."""
    _check_pair_mode(mode)
    samples = teacher.complete([build_messages(r.question, "think") for r in records], sampling)
    return pairs_from_samples(records, samples, mode, seed)


def _check_pair_mode(mode: str) -> None:
    if mode not in PAIR_MODES:
        raise CotlabError(f"unknown pair mode '{mode}': choose one of {', '.join(PAIR_MODES)}")


def pairs_from_samples(records, samples: list[list[Completion]], mode: str = "correct_vs_wrong", seed: int = 0,
                       gold_fallback: bool = False, count_tokens=None) -> tuple[list[dict], dict]:
    """Preference pairs from a model's own samples, in TRL's conversational preference format.

    correct_vs_wrong: a verified, finished chain is chosen over a wrong one (*Self-Training with
    Direct Preference Optimization Improves Chain-of-Thought Reasoning*).  long_vs_short: the
    longest correct chain over the shortest (*Thinking Preference Optimization*); short_vs_long is
    the reverse, for a more concise model.  Questions without a usable pair are skipped.

    gold_fallback (correct_vs_wrong only): a question with no correct sample but a gold rationale
    pairs the gold chain (chosen) with a wrong sample, so a weak model still gets pairs; each pair
    records where its chosen chain came from, and `count_tokens` measures the gold chain.
    """
    _check_pair_mode(mode)
    rng = random.Random(seed)
    pairs = []
    for record, question_samples in zip(records, samples):
        judged = [(s, is_correct(record, extract_answer(s.text))) for s in question_samples]
        right = [s for s, ok in judged if ok and s.finished]
        wrong = [s for s, ok in judged if not ok]
        chosen_from = "sample"
        if mode == "correct_vs_wrong":
            if not right and gold_fallback and record.rationale and wrong:
                gold = think_completion(record.rationale, record.answer)
                right, chosen_from = [Completion(gold, count_tokens(gold) if count_tokens else len(gold.split()), True)], "gold"
            if not right or not wrong:
                continue
            chosen, rejected = rng.choice(right), rng.choice(wrong)
        else:
            distinct = {_normalized(s.text): s for s in right}
            if len(distinct) < 2:
                continue
            by_length = sorted(distinct.values(), key=lambda s: s.tokens)
            chosen, rejected = (by_length[-1], by_length[0]) if mode == "long_vs_short" else (by_length[0], by_length[-1])
        pairs.append({"prompt": build_messages(record.question, "think"),
                      "chosen": [{"role": "assistant", "content": chosen.text}],
                      "rejected": [{"role": "assistant", "content": rejected.text}],
                      "source_id": record.id, "chosen_from": chosen_from,
                      "chosen_tokens": chosen.tokens, "rejected_tokens": rejected.tokens})
    n = len(pairs)
    stats = {"mode": mode, "questions": len(records), "pairs": n, "questions_with_pair": n / len(records) if records else 0.0,
             "gold_chosen": sum(p["chosen_from"] == "gold" for p in pairs),
             "mean_chosen_tokens": sum(p["chosen_tokens"] for p in pairs) / n if n else 0.0,
             "mean_rejected_tokens": sum(p["rejected_tokens"] for p in pairs) / n if n else 0.0}
    return pairs, stats
