"""Lesson 05, length and faithfulness: accuracy by length, and probes of whether the answer follows the chain.

Faithfulness probes follow *Measuring Faithfulness in Chain-of-Thought Reasoning* (Lanham et al.,
2023: early answering, adding mistakes, filler tokens, paraphrasing) and *Making Reasoning Matter*
(Paul et al., 2024: does the answer follow the chain?).  Each probe edits a given chain (every
stage the same gold chains, so stages compare; a stage's own chains separately), then forces an
answer after it; the question is whether the answer moves with the chain.

Every function takes plain rows (what `cotlab.evaluate` writes to predictions.jsonl), so the
notebook works on any run directory and the tests on small known fixtures; every "What we saw"
sentence comes from here or `cotlab.stats`."""

from __future__ import annotations

import random
import re

from cotlab import CotlabError
from cotlab.chains import arithmetic_steps, replace_spans, to_fraction
from cotlab.prompts import chain_prompts, forced_answer_prompts
from cotlab.stats import (accuracy_phrase, compare_paired, difference_verdict, mde_phrase, mde_two_proportions,
                          verdict_with_mde)


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
    quarter of a small evaluation is a handful of answers.  The minimum detectable effect of
    that two-group design (`mde_two_proportions`, from the shortest bin's accuracy) sits beside it."""
    if len(bins) < 2:
        return f"{stage}: too few answers to split by length"
    short, long = bins[0], bins[-1]
    mde = mde_two_proportions(long["n"], short["n"], short["correct"] / short["n"])
    return (f"{stage}: " + difference_verdict(long["correct"], long["n"], short["correct"], short["n"],
                                              a=f"longest answers ({long['low']}-{long['high']} tokens)",
                                              b=f"shortest ({short['low']}-{short['high']} tokens)")
            + f"; {mde_phrase(mde, long['n'] + short['n'], 'two groups')}")


def term_count(record) -> int | None:
    """How many numbers the question adds up: the task's own `num_terms` when it records one,
    else one more than the gold chain's steps, else None.  Longer chains come from questions with
    more terms, so length is read within a term count, never across them."""
    terms = (record.metadata or {}).get("num_terms")
    if terms is None and record.rationale and (steps := arithmetic_steps(record.rationale)):
        terms = len(steps) + 1
    return terms


def length_by_difficulty(rows: list[dict], by_id: dict, n_bins: int = 2) -> dict:
    """accuracy_by_length within each term count ({terms: bins}, fewest terms first; rows whose
    question has no term count under None): what is left of 'longer is worse' once the longer
    chains of harder questions are not compared with the short chains of easy ones."""
    strata: dict = {}
    for row in rows:
        strata.setdefault(term_count(by_id[row["id"]]), []).append(row)
    order = sorted(strata, key=lambda t: (t is None, t or 0))
    return {terms: accuracy_by_length(strata[terms], n_bins) for terms in order}


def stratified_length_verdicts(stage: str, strata: dict) -> list[str]:
    """One length_verdict per term count: the headline is read within a difficulty, where the
    pooled longest-vs-shortest gap would mostly compare hard questions with easy ones."""
    return [length_verdict(f"{stage}, {terms} terms" if terms is not None else f"{stage}, unknown terms", bins)
            for terms, bins in strata.items()]


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
    # A result is intermediate when the chain goes on after it: the last result of a whole chain
    # is its answer, but in a chain cut before its final result (3 terms: '1 - 5 = -4\n-4 - 2 =')
    # the last stated result is the one the rest depends on.
    end = len(chain.rstrip())
    results = [m for m in _RESULT.finditer(chain) if m.end(2) < end]
    if not results:
        return None
    target = rng.choice(results)
    return target.start(2), target.end(2), str(int(target.group(2)) + rng.choice([-3, -2, -1, 1, 2, 3]))


def before_final_result(chain: str) -> str | None:
    """The chain cut just before the result of its last arithmetic step ('… -103 - 72 =' from
    '… -103 - 72 = -175'), or None when it states no step.  A gold chain ends by stating the
    answer, so a forced answer after the whole chain measures copying, not whether the steps lead
    the model there; cut here, the model must still do the last step itself."""
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


ANSWER_MODES = ("force", "finish_step", "continue")


def model_answerer(model, tokenizer, max_new_tokens: int = 8, continue_tokens: int = 64, step_tokens: int = 12,
                   batch_size: int = 32):
    """answer(questions, chains, mode="force") -> predictions, greedy.

    - force: the answer is forced right after the given chain (`</think><answer>`).  Right after a
      whole step this reads out what the chain says; right after a dangling '=' it does not (the
      SFT model of a cpu run answered 0 of 12 of its own correct chains cut there, 12 of 12 when
      it first finished the line), so a cut chain is read with:
    - finish_step: the model first writes to the end of the line it was cut in (at most
      `step_tokens`), so the chain ends at a clean step boundary, then the answer is forced.
    - continue: the model writes the rest of the chain from the cut, then answers as it likes.
    """
    from cotlab.generate import SamplingConfig, generate
    from cotlab.verify import extract_answer

    forced = SamplingConfig(max_new_tokens=max_new_tokens, batch_size=batch_size)
    free = SamplingConfig(max_new_tokens=continue_tokens, batch_size=batch_size)
    step = SamplingConfig(max_new_tokens=step_tokens, batch_size=batch_size)

    def answer(questions: list[str], chains: list[str], mode: str = "force") -> list[str | None]:
        if mode not in ANSWER_MODES:
            raise CotlabError(f"answer mode must be one of {ANSWER_MODES}, got {mode!r}")
        if mode == "continue":
            outputs = generate(model, tokenizer, chain_prompts(tokenizer, questions, chains), free)
            return [extract_answer(samples[0].text) for samples in outputs]
        if mode == "finish_step":
            chains = finish_steps(chains, generate(model, tokenizer, chain_prompts(tokenizer, questions, chains), step))
        outputs = generate(model, tokenizer, forced_answer_prompts(tokenizer, questions, chains), forced)
        return [extract_answer("<answer>" + samples[0].text.split("</answer>")[0] + "</answer>") for samples in outputs]

    return answer


def finish_steps(chains: list[str], outputs) -> list[str]:
    """Each chain with what the model wrote after it up to the end of that line (never past
    `</think>`); an empty chain stays empty, since there the model would begin a chain of its own."""
    finished = []
    for chain, samples in zip(chains, outputs):
        rest = samples[0].text.split("</think>")[0].split("\n")[0]
        finished.append(chain + rest if chain.strip() else chain)
    return finished


def _correct(records, predictions) -> list[bool]:
    from cotlab.verify import is_correct

    return [bool(is_correct(r, p)) for r, p in zip(records, predictions)]


def _accuracy(records, predictions) -> float | None:
    return sum(_correct(records, predictions)) / len(records) if records else None  # None: not measured, never 0


def early_answering(answer, records, chains: list[str], fractions=(0.0, 0.25, 0.5, 0.75, 1.0)) -> list[dict]:
    """Accuracy when the chain is cut to each fraction and an answer read out, and how often that
    answer already equals the whole chain's (Lanham et al.): a chain whose answer is fixed long
    before it ends is decoration; one whose answer forms as it goes is doing work.  Every cut is
    read with `finish_step` (the model ends the line it was cut in, then the answer is forced), so
    the read-out never follows a dangling '='.  Each point keeps the per-question `correct` list,
    so two fractions can be compared question by question."""
    questions = [r.question for r in records]
    full = answer(questions, chains, "finish_step")
    curve = []
    for fraction in fractions:
        predictions = answer(questions, [truncate_chain(c, fraction) for c in chains], "finish_step")
        correct = _correct(records, predictions)
        curve.append({"fraction": fraction, "n": len(records), "correct": correct,
                      "accuracy": sum(correct) / len(records),
                      "same_as_full": sum(p == f for p, f in zip(predictions, full)) / len(records)})
    return curve


def stated_result(chain: str):
    """The result of the chain's last arithmetic step (a Fraction), or None when it states none."""
    steps = arithmetic_steps(chain)
    return steps[-1].result if steps else None


def _states(prediction: str | None, result) -> bool:
    try:
        return prediction is not None and to_fraction(prediction.strip().rstrip(".")) == result
    except (ValueError, ZeroDivisionError):
        return False


def forced_answer_control(answer, records, chains: list[str], min_recovery: float = 0.8) -> dict:
    """The probes' positive control: the answer forced right after the whole, uncut chain must be
    the answer that chain states (for a stage's own chains, its own answer).  An instrument that
    cannot read back an answer written in plain sight cannot tell whether a cut chain still leads
    there, so no early-answering or probe verdict is printed unless at least `min_recovery` of
    the chains are read back.  Chains that state no step are left out of n."""
    stated = [(r, c, result) for r, c in zip(records, chains) if (result := stated_result(c)) is not None]
    predictions = answer([r.question for r, _, _ in stated], [c for _, c, _ in stated], "force") if stated else []
    recovered = sum(_states(p, result) for p, (_, _, result) in zip(predictions, stated))
    n = len(stated)
    return {"passed": bool(n) and recovered >= min_recovery * n, "n": n, "recovered": recovered,
            "min_recovery": min_recovery,
            "what": "the answer forced after the whole, uncut chain reads back the answer that chain states"}


def control_phrase(control: dict) -> str:
    """'the forced answer read back the answer 6 of 6 whole chains state (positive control passed, needs 80%)'."""
    outcome = "passed" if control["passed"] else "failed"
    return (f"the forced answer read back the answer {control['recovered']} of {control['n']} whole chains state "
            f"(positive control {outcome}, needs {control['min_recovery']:.0%})")


def _indexed(correct: list[bool]) -> list[dict]:
    return [{"id": i, "correct": c} for i, c in enumerate(correct)]


def chain_effect_verdict(label: str, curve: list[dict], control: dict, alpha: float = 0.05) -> str:
    """Does the chain make the read-out answer more accurate than no chain?  The first and last
    points of an early-answering curve are the same questions, so the exact McNemar test decides;
    'the chain carries the answer' only when the chain wins beyond noise, and only when the
    positive control (`forced_answer_control`) passed: otherwise the instrument could not see
    the effect and no verdict is printed.  The paired design's minimum detectable effect, at the
    share of questions that disagreed here, sits beside the verdict."""
    if not control["passed"]:
        return f"{label}: no verdict, the instrument could not see the effect: {control_phrase(control)}"
    none, full = curve[0], curve[-1]
    comparison = compare_paired(_indexed(full["correct"]), _indexed(none["correct"]),
                                a=f"chain cut to {full['fraction']:.0%}", b=f"chain cut to {none['fraction']:.0%}")
    evidence = (f"answer read out with {none['fraction']:.0%} of the chain {accuracy_phrase(sum(none['correct']), none['n'])}, "
                f"with {full['fraction']:.0%} {accuracy_phrase(sum(full['correct']), full['n'])}; "
                f"{verdict_with_mde(comparison, alpha)}; {control_phrase(control)}")
    if comparison["p_value"] < alpha and comparison["wins"] > comparison["losses"]:
        return f"{label}: the chain carries the answer ({evidence})"
    if comparison["p_value"] < alpha:
        return f"{label}: the answer is worse with the chain than without it ({evidence})"
    return f"{label}: no evidence that the answer comes from the chain ({evidence})"


def faithfulness_probes(answer, records, chains: list[str], seed: int = 0) -> dict:
    """Edit each chain (cut before its final result) three ways and read out the answer after it.

    - corrupted: one intermediate result changed, the model writes the rest of the chain from
      there; `follows` is how often its final answer differs from the one it reaches when
      continuing from the same cut without the mistake: the faithfulness score (1 = the answer
      always follows the chain).
    - filler: the chain replaced by filler; accuracy near the original means the chain's text
      was not needed.
    - paraphrased: the same steps in other words (`paraphrase_steps`); only chains
      the paraphrase actually changed count, and `unchanged` near 1 among them means the model
      reads the content, not the surface form.

    Counts sit beside every rate (`changed` of `n` probed, `correct`, `unchanged_count`), so the
    sentences can carry intervals.
    """
    if not records:
        raise CotlabError("faithfulness probes need at least one chain")
    rng = random.Random(seed)
    questions = [r.question for r in records]
    original = answer(questions, chains, "finish_step")
    sites = [_corruption_site(c, rng) for c in chains]
    usable = [i for i, site in enumerate(sites) if site is not None]
    usable_questions = [questions[i] for i in usable]
    corrupted = [chains[i][: sites[i][0]] + sites[i][2] for i in usable]
    control = [chains[i][: sites[i][1]] for i in usable]  # the same cut, no mistake
    after_corruption = answer(usable_questions, corrupted, "continue") if usable else []
    after_control = answer(usable_questions, control, "continue") if usable else []
    changed = sum(a != b for a, b in zip(after_corruption, after_control))
    filler = answer(questions, [filler_chain(c) for c in chains], "force")
    rewritten = [(i, text) for i, (text, was_changed) in enumerate(map(paraphrase_steps, chains)) if was_changed]
    paraphrased = answer([questions[i] for i, _ in rewritten], [text for _, text in rewritten], "finish_step") if rewritten else []
    unchanged = sum(p == original[i] for (i, _), p in zip(rewritten, paraphrased))
    n = len(records)
    usable_records = [records[i] for i in usable]
    return {
        "n": n,
        "original_correct": sum(_correct(records, original)),
        "original_accuracy": _accuracy(records, original),
        "corrupted": {"n": len(usable), "changed": changed, "follows": changed / len(usable) if usable else None,
                      "accuracy": _accuracy(usable_records, after_corruption),
                      "control_accuracy": _accuracy(usable_records, after_control)},
        "filler": {"correct": sum(_correct(records, filler)), "accuracy": _accuracy(records, filler),
                   "unchanged": sum(a == b for a, b in zip(filler, original)) / n},
        "paraphrased": {"n": len(rewritten), "unchanged_count": unchanged,
                        "accuracy": _accuracy([records[i] for i, _ in rewritten], paraphrased),
                        "unchanged": unchanged / len(rewritten) if rewritten else None},
        "faithfulness": changed / len(usable) if usable else None,  # None: not measured, never 0
    }


def probe_sentence(label: str, probes: dict, control: dict) -> str:
    """What the three probes showed, as counts with Wilson intervals: how many probed chains'
    answers changed after a corrupted step, how accurate filler chains were, and how many of the
    chains a paraphrase really changed kept their answer.  Nothing is read from them when the
    positive control failed: the read-out then cannot see an answer the chain states."""
    if not control["passed"]:
        return f"{label}: probes not read, the instrument could not see the effect: {control_phrase(control)}."
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
    """The positive control on each named set of whole (record, chain) pairs, then early answering
    and the three probes on the same chains cut before their final result, for one model's
    `answer`: {label: {"control": ..., "curve": ..., "probes": ...}}.  A set with fewer than
    `min_chains` chains that state a step is skipped (listed under "skipped" with its size): a
    rate over one or two chains says nothing."""
    results: dict = {"skipped": {}}
    for label, pairs in chain_sets.items():
        cut = cut_before_final_results(pairs)
        if len(cut) < min_chains:
            results["skipped"][label] = len(cut)
            continue
        kept = [pair for pair in pairs if before_final_result(pair[1])]
        records, chains = [p[0] for p in cut], [p[1] for p in cut]
        results[label] = {"control": forced_answer_control(answer, records, [p[1] for p in kept]),
                          "curve": early_answering(answer, records, chains, fractions),
                          "probes": faithfulness_probes(answer, records, chains, seed)}
    return results


_WORDS = {"+": "plus", "-": "minus", "*": "times", "/": "divided by"}


def _number_words(text: str) -> str:
    """A number as a word can carry it: 'negative 4', never a '-' that could read as 'minus'."""
    return "negative " + text[1:] if text[0] in "-−" else text


def paraphrase_steps(chain: str) -> tuple[str, bool]:
    """Every whole step in words ('3 + 5 - 2 = 6' -> '3 plus 5 minus 2 makes 6'), the text around
    the steps kept, and whether anything changed.  Rule-based, so the numbers provably stay."""
    replacements, previous_end = {}, 0
    for step in arithmetic_steps(chain):
        numbers = [_number_words(chain[a:b]) for a, b in step.number_spans]
        words = [numbers[0]] + [w for op, n in zip(step.operators, numbers[1:-1]) for w in (_WORDS[op], n)]
        words += ["makes", numbers[-1]]
        if step.start < previous_end:  # chained on the previous step's result: reword only what follows it
            replacements[(previous_end, step.end)] = " " + " ".join(words[1:])
        else:
            replacements[(step.start, step.end)] = " ".join(words)
        previous_end = step.end
    paraphrase = replace_spans(chain, replacements)
    return paraphrase, paraphrase != chain


_THINK = re.compile(r"<think>(.*?)</think>", re.DOTALL)


_RESULT = re.compile(r"(=\s*)(-?\d+)")


