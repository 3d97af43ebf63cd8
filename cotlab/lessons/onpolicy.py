"""On-policy distillation against SFT on the same teacher's chains (lesson 11).

*On-Policy Distillation of Language Models: Learning from Self-Generated Mistakes* (Agarwal et al.,
GKD) trains the student on its OWN samples, scored token by token by the teacher (a reverse KL
between the two next-token distributions), instead of on the teacher's outputs.  Their argument:
a student trained on the teacher's text never sees the prefixes it will itself produce at test
time (exposure bias), while on its own samples it learns to recover from its own mistakes.

The matched comparison, from the same start (the base model), steps, learning rate, batch, LoRA,
prompts and seed:

- A, *sequence-level* distillation (*Sequence-Level Knowledge Distillation*, Kim & Rush): SFT on
  the teacher's greedy chains for the training prompts, every chain kept, right or wrong (the
  on-policy side never sees a gold answer either, so neither does this one);
- B, on-policy distillation: TRL's `DistillationTrainer` (`cotlab.training.train_onpolicy`).

The base model and the teacher are the reference lines.  The sentences say B against A with the
exact McNemar test (the lesson's one planned comparison) and the reference comparisons as one
Holm-adjusted family.
"""

from __future__ import annotations

from pathlib import Path

from cotlab import CotlabError
from cotlab.prompts import build_messages
from cotlab.recipes import DISTILLATION_BUDGET_FIELDS
from cotlab.stats import compare_paired, paired_verdict, paper_claim_sentence, with_holm
from cotlab.verify import grade

PAPER = "On-Policy Distillation of Language Models: Learning from Self-Generated Mistakes"
STAGES = ("base", "teacher", "sft_on_teacher", "on_policy")
ALPHA = 0.05


def divergence_name(beta: float) -> str:
    """What TRL's generalised JSD is at a given beta: its loss, named for labels and sentences."""
    return {1.0: "reverse KL", 0.0: "forward KL", 0.5: "JSD"}.get(float(beta), f"generalised JSD (beta {beta:g})")


def choose_teacher(run, teacher: str, teacher_adapter: str | None, model: str, task: str, folder: str | Path,
                   fallback_steps: int, data_seed: int = 0, seed: int = 0) -> tuple[str, str | None, str]:
    """(teacher model, teacher adapter, what it is).  teacher "sft": the student's own model with
    this run's SFT adapter (notebook 02), or, when the lesson runs alone, a short SFT on gold chains
    trained into `folder` (`matched.sft_start`); any other value is a model spec used as it is,
    with `teacher_adapter` (a larger model of the student's family on a GPU)."""
    if teacher != "sft":
        return teacher, teacher_adapter, teacher + (f" with the adapter {teacher_adapter}" if teacher_adapter else "")
    if teacher_adapter:
        raise CotlabError("teacher 'sft' is this run's SFT model: leave teacher_adapter unset, or name the teacher's model")
    from cotlab.lesson import sft_start

    adapter, said = sft_start(run, model, task, folder, fallback_steps, data_seed=data_seed, seed=seed)
    return model, adapter, f"{model} with {said}"


def teacher_chain_rows(teacher, records, sampling) -> tuple[list[dict], dict]:
    """SFT rows (TRL's prompt/completion format, think style) of the teacher's own chains for
    `records`, one per question as the teacher wrote it: sequence-level distillation keeps every
    chain, right or wrong, finished or cut off, because the on-policy side is never told which
    answers are right either.  How many were right and finished is counted, not filtered on.
    `teacher` is anything with `complete(conversations, sampling)` (`cotlab.teachers`)."""
    if not records:
        raise CotlabError("no training questions to ask the teacher")
    completions = teacher.complete([build_messages(r.question, "think") for r in records], sampling)
    rows, right, finished, tokens = [], 0, 0, 0
    for record, samples in zip(records, completions):
        chain = samples[0]
        rows.append({"prompt": build_messages(record.question, "think"),
                     "completion": [{"role": "assistant", "content": chain.text}], "source_id": record.id})
        right += bool(grade(record, chain.text)["correct"])
        finished += bool(chain.finished)
        tokens += chain.tokens
    n = len(rows)
    return rows, {"chains": n, "right": right / n, "finished": finished / n, "mean_tokens": tokens / n}


def same_budget(sft_recipe, distill_recipe) -> dict:
    """Check that an SFT recipe and a distillation recipe share everything in DISTILLATION_BUDGET_FIELDS (start,
    LoRA, schedule, batch, seed), so a difference in outcome is the method's; return those values."""
    a, b = sft_recipe.to_dict(), distill_recipe.to_dict()
    differ = [key for key in DISTILLATION_BUDGET_FIELDS if a.get(key) != b.get(key)]
    if differ:
        raise CotlabError("not a matched comparison: SFT and distillation differ in "
                          + ", ".join(f"{key} ({a.get(key)!r} vs {b.get(key)!r})" for key in differ))
    return {key: a.get(key) for key in DISTILLATION_BUDGET_FIELDS}


def distillation_comparisons(rows: dict[str, list[dict]]) -> dict:
    """The lesson's tests on the same held-out questions.  `primary`: on_policy (B) against
    sft_on_teacher (A), exact McNemar, the one comparison planned before the run.  `references`:
    teacher, sft_on_teacher and on_policy each against base, read as one family (Holm-adjusted)."""
    missing = [stage for stage in STAGES if stage not in rows]
    if missing:
        raise CotlabError(f"the distillation comparison needs every stage's rows; missing {', '.join(missing)}")
    references = {f"{a}_vs_base": compare_paired(rows[a], rows["base"], a, "base") for a in ("teacher", "sft_on_teacher", "on_policy")}
    return {"primary": compare_paired(rows["on_policy"], rows["sft_on_teacher"], "on_policy", "sft_on_teacher"),
            "references": with_holm(references)}


def _beats(comparison: dict, alpha: float) -> bool:
    return comparison.get("p_holm", comparison["p_value"]) < alpha and comparison["wins"] > comparison["losses"]


def gap_sentence(comparisons: dict, alpha: float = ALPHA) -> str:
    """How much of the teacher's lead over the base model each student closed, in points: one
    run each, no interval, so descriptive; said only when the teacher beats base beyond noise."""
    teacher = comparisons["references"]["teacher_vs_base"]
    if not _beats(teacher, alpha):
        return "No share of the teacher's lead is computed: the teacher does not beat the base model beyond noise here."
    lead = teacher["difference"]
    closed = {name: comparisons["references"][f"{name}_vs_base"]["difference"] for name in ("sft_on_teacher", "on_policy")}
    return (f"Of the teacher's {100 * lead:.0f}-point lead over the base model, SFT on its chains closed "
            f"{100 * closed['sft_on_teacher']:+.0f} points ({closed['sft_on_teacher'] / lead:.0%}) and on-policy distillation "
            f"{100 * closed['on_policy']:+.0f} ({closed['on_policy'] / lead:.0%}): one run each, descriptive (the tests are above).")


def distillation_verdicts(comparisons: dict, steps: int, alpha: float = ALPHA) -> list[str]:
    """The 'What we saw' sentences of lesson 11, from distillation_comparisons(): is there anything
    to distil (teacher against base), did each method teach the student at all, the paper's claim
    (B against A) set against this run's test, and how much of the gap each closed."""
    references = comparisons["references"]
    teacher = references["teacher_vs_base"]
    lines = [("There is something to distil: " if _beats(teacher, alpha) else
              "There is little to distil here, so the comparison below says little about the methods: ")
             + paired_verdict(teacher, alpha) + "."]
    lines += [paired_verdict(references[f"{name}_vs_base"], alpha) + "." for name in ("sft_on_teacher", "on_policy")]
    if not any(_beats(references[f"{name}_vs_base"], alpha) for name in ("sft_on_teacher", "on_policy")):
        lines.append(f"Neither method moved the student beyond noise in {steps} step{'' if steps == 1 else 's'}: this run shows "
                     "the method, not a result (absence of evidence at this budget, not evidence that either cannot teach).")
    lines.append(paper_claim_sentence(comparisons["primary"], PAPER,
                                      "that training the student on its own samples scored by the teacher (on-policy) beats "
                                      "supervised training on the teacher's outputs", alpha))
    lines.append(gap_sentence(comparisons, alpha))
    return lines


def teacher_chains_sentence(chain_stats: dict) -> str:
    """What A learns from: how many of the teacher's chains are right and finished."""
    warning = (" Most are wrong: A imitates wrong chains, and B is pulled toward the same teacher."
               if chain_stats["right"] < 0.5 else "")
    return (f"The teacher's chains for A: {chain_stats['right']:.0%} right and {chain_stats['finished']:.0%} finished "
            f"({chain_stats['chains']} chains).{warning}")


def clipped_sentence(clipped: dict[str, float]) -> str:
    """Held-out answers cut off at max_new_tokens, by stage: a stage that never stops cannot be scored right."""
    text = "Held-out answers cut off at max_new_tokens: " + ", ".join(f"{s} {r:.0%}" for s, r in clipped.items()) + "."
    worst = max(clipped, key=clipped.get)
    if clipped[worst] > 0.5:
        text += f" Most of {worst}'s answers never finished: its accuracy measures stopping as much as reasoning."
    return text


def cost_sentence(a: dict, b: dict) -> str:
    """A's and B's training cost at the same steps: tokens and seconds (one run each, no interval)."""
    ratio = b["wall_seconds"] / max(a["wall_seconds"], 1e-9)
    return (f"Cost: A trained on {a['train_tokens']} tokens in {a['wall_seconds']}s, B on {b['train_tokens']} (prompts and the student's "
            f"samples, each scored by the teacher) in {b['wall_seconds']}s: {ratio:.1f} times A's time at the same steps "
            f"({'dearer' if ratio > 1 else 'cheaper'}; one run each).")
