"""Preference pairs for DPO from a model's own samples, in TRL's conversational preference format."""

from __future__ import annotations

import random

from cotlab import CotlabError
from cotlab.generate import Completion, SamplingConfig
from cotlab.prompts import build_messages, think_completion
from cotlab.distill import normalized
from cotlab.verify import extract_answer, is_correct

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
                       gold_fallback: bool = False, count_tokens=None, require_finished: bool = True) -> tuple[list[dict], dict]:
    """Preference pairs from a model's own samples, in TRL's conversational preference format.

    correct_vs_wrong: a verified, finished chain is chosen over a wrong one (*Self-Training with
    Direct Preference Optimization Improves Chain-of-Thought Reasoning*).  long_vs_short: the
    longest correct chain over the shortest (*Thinking Preference Optimization*); short_vs_long is
    the reverse, for a more concise model.  Questions without a usable pair are skipped.

    Both sides must be finished chains: were a cut-off sample allowed on the rejected side only,
    DPO could learn "stop" rather than "be right".  Cut-off samples are excluded, and counted
    (`cut_off_excluded`), so the control for truncation is visible.  require_finished=False lets
    cut-off samples be rejected again (never chosen): only for a model that never finishes a chain,
    such as the smoke test's random one, and the stats then count the cut-off rejected samples.

    gold_fallback (correct_vs_wrong only): a question with no correct sample but a gold rationale
    pairs the gold chain (chosen) with a wrong sample, so a weak model still gets pairs; each pair
    records where its chosen chain came from, and `count_tokens` measures the gold chain.
    """
    _check_pair_mode(mode)
    rng = random.Random(seed)
    pairs, cut_off = [], 0
    for record, question_samples in zip(records, samples):
        if require_finished:
            cut_off += sum(not s.finished for s in question_samples)
        judged = [(s, is_correct(record, extract_answer(s.text))) for s in question_samples if s.finished or not require_finished]
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
            distinct = {normalized(s.text): s for s in right}
            if len(distinct) < 2:
                continue
            by_length = sorted(distinct.values(), key=lambda s: s.tokens)
            chosen, rejected = (by_length[-1], by_length[0]) if mode == "long_vs_short" else (by_length[0], by_length[-1])
        pairs.append({"prompt": build_messages(record.question, "think"),
                      "chosen": [{"role": "assistant", "content": chosen.text}],
                      "rejected": [{"role": "assistant", "content": rejected.text}],
                      "source_id": record.id, "chosen_from": chosen_from,
                      "chosen_tokens": chosen.tokens, "rejected_tokens": rejected.tokens,
                      "rejected_finished": rejected.finished})
    n = len(pairs)
    stats = {"mode": mode, "questions": len(records), "pairs": n, "questions_with_pair": n / len(records) if records else 0.0,
             "gold_chosen": sum(p["chosen_from"] == "gold" for p in pairs), "cut_off_excluded": cut_off,
             "cut_off_rejected": sum(not p["rejected_finished"] for p in pairs),
             "mean_chosen_tokens": sum(p["chosen_tokens"] for p in pairs) / n if n else 0.0,
             "mean_rejected_tokens": sum(p["rejected_tokens"] for p in pairs) / n if n else 0.0}
    return pairs, stats
