"""Prompting styles, formatted with the model's own chat template.

- ``direct``: ask for the answer alone (the no-CoT baseline).
- ``zero_shot_cot``: "Let's think step by step" (Kojima et al., *Large Language Models are
  Zero-Shot Reasoners*).
- ``few_shot_cot``: worked examples as earlier chat turns (Wei et al., *Chain-of-Thought
  Prompting Elicits Reasoning in Large Language Models*).
- ``think``: the tag format that SFT, DPO and GRPO all train and score:
  ``<think>…</think>`` then ``<answer>…</answer>`` on the final line.

Training examples use TRL's conversational prompt/completion format, so a dataset built here
goes straight into SFTTrainer, DPOTrainer or GRPOTrainer.
"""

from __future__ import annotations

STYLES = ("direct", "zero_shot_cot", "few_shot_cot", "think")

THINK_SYSTEM = (
    "You are a careful assistant. Reason step by step inside <think> </think>, "
    "then give only the final answer inside <answer> </answer>."
)
DIRECT_SUFFIX = "\nReply with only the final answer, on one line, as: Answer: <answer>"
COT_SUFFIX = "\nLet's think step by step. End with the final answer on its own line, as: Answer: <answer>"

# Used when the task has no gold rationales to draw few-shot examples from (after the
# exemplars of Wei et al., 2022).
DEFAULT_EXEMPLARS = [
    (
        "There are 15 trees in the grove. Grove workers will plant trees in the grove today. "
        "After they are done, there will be 21 trees. How many trees did the grove workers plant today?",
        "There are 15 trees originally. Then there were 21 trees after some more were planted. "
        "So there must have been 21 - 15 = 6.",
        "6",
    ),
    (
        "Leah had 32 chocolates and her sister had 42. If they ate 35, how many pieces do they have left in total?",
        "Originally, Leah had 32 chocolates. Her sister had 42. So in total they had 32 + 42 = 74. "
        "After eating 35, they had 74 - 35 = 39.",
        "39",
    ),
    (
        "Olivia has $23. She bought five bagels for $3 each. How much money does she have left?",
        "Olivia had 23 dollars. 5 bagels for 3 dollars each will be 5 x 3 = 15 dollars. "
        "So she has 23 - 15 = 8 dollars left.",
        "8",
    ),
]


def check_style(style: str) -> str:
    from cotlab import CotlabError

    if style not in STYLES:
        raise CotlabError(f"unknown prompting style '{style}': choose one of {', '.join(STYLES)}")
    return style


def think_completion(rationale: str, answer: str) -> str:
    """The training target of the think format."""
    return f"<think>\n{rationale.strip()}\n</think>\n<answer>{answer.strip()}</answer>"


def build_messages(question: str, style: str = "think", exemplars: list[tuple[str, str, str]] | None = None) -> list[dict]:
    """Chat messages (without the assistant's reply) that ask `question` in `style`.

    exemplars: (question, rationale, answer) triples for few_shot_cot; defaults to DEFAULT_EXEMPLARS.
    """
    check_style(style)
    if style == "think":
        return [{"role": "system", "content": THINK_SYSTEM}, {"role": "user", "content": question}]
    if style == "direct":
        return [{"role": "user", "content": question + DIRECT_SUFFIX}]
    if style == "zero_shot_cot":
        return [{"role": "user", "content": question + COT_SUFFIX}]
    messages = []
    for q, rationale, answer in exemplars or DEFAULT_EXEMPLARS:
        messages.append({"role": "user", "content": q + COT_SUFFIX})
        messages.append({"role": "assistant", "content": f"{rationale.strip()}\nAnswer: {answer}"})
    messages.append({"role": "user", "content": question + COT_SUFFIX})
    return messages


def exemplars_from(records, k: int = 3) -> list[tuple[str, str, str]]:
    """Few-shot exemplars from records that carry a gold rationale (use the train split)."""
    with_rationale = [r for r in records if r.rationale]
    return [(r.question, strip_final_answer_line(r.rationale), r.answer) for r in with_rationale[:k]] or DEFAULT_EXEMPLARS[:k]


def strip_final_answer_line(rationale: str) -> str:
    """Drop a trailing '#### N' line: the answer goes in the style's own answer slot."""
    lines = rationale.rstrip().splitlines()
    while lines and lines[-1].lstrip().startswith("####"):
        lines.pop()
    return "\n".join(lines).strip()


def render_prompt(tokenizer, messages: list[dict]) -> str:
    """The text the model sees, ending with the template's assistant header."""
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


def sft_example(question: str, rationale: str, answer: str, **extra) -> dict:
    """One row of TRL's conversational prompt/completion format, in the think style."""
    return {
        "prompt": build_messages(question, "think"),
        "completion": [{"role": "assistant", "content": think_completion(rationale, answer)}],
        **extra,
    }


# A chain written for the model: its turn begun with a given chain, then (forced) the answer tag.
FORCE_ANSWER = "\n</think>\n<answer>"


def chain_prompts(tokenizer, questions: list[str], chains: list[str], suffix: str = "") -> list[str]:
    """The think-format prompt with the assistant's turn already begun by the given chain."""
    return [render_prompt(tokenizer, build_messages(q, "think")) + "<think>\n" + c + suffix for q, c in zip(questions, chains)]


def forced_answer_prompts(tokenizer, questions: list[str], chains: list[str]) -> list[str]:
    """Prompt text that ends inside the answer tag, after the given (edited) chain."""
    return chain_prompts(tokenizer, questions, chains, FORCE_ANSWER)
