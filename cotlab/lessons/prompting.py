"""Lesson 00, baselines and prompting: what its "What we saw" cell says about chain-of-thought prompting
at this model's scale (*Chain-of-Thought Prompting Elicits Reasoning in Large Language Models*: the
gain appears only in large models)."""

from __future__ import annotations

from cotlab.stats import holm


def parameter_phrase(count: int) -> str:
    """'135M' or '0.49B': a model's measured size as the lessons print it."""
    return f"{count / 1e9:.2g}B" if count >= 1e9 else f"{count / 1e6:.0f}M"


def token_cost_sentence(task: str, mean_tokens: dict[str, float], reference: str = "direct") -> str:
    """Each prompting style's mean completion length, and how many times the reference style's
    (direct answering) it spends: the cost a chain of thought adds."""
    base = mean_tokens.get(reference)
    costs = ", ".join(f"{style} {tokens:.0f}" + (f" ({tokens / base:.1f}x {reference})" if base and style != reference else "")
                      for style, tokens in mean_tokens.items())
    return f"[{task}] mean completion tokens: {costs}"


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
