"""Control runs: what a training stage would gain without the thing it claims to teach.

CoT SFT changes two things at once: the model learns to write a chain of thought, and it learns
the answer format (`<answer>N</answer>`, then stop).  A base model that fails mostly on format
would gain from the second alone.  The answer-only control trains on the very same rows with the
chain removed, so the difference between the two runs is what the chain itself adds (the
"standard fine-tuning" on labels alone that *Distilling Step-by-Step!* compares rationale
training against).
"""

from __future__ import annotations

from cotlab import CotlabError
from cotlab.verify import CLOSED_ANSWER_TAG

# The think format with an empty chain, not a bare <answer> tag: the evaluation's format check and
# prompt stay the same for both runs, so the chain is the only difference between them.
ANSWER_ONLY_COMPLETION = "<think>\n</think>\n<answer>{answer}</answer>"


def answer_only_completion(completion: str) -> str:
    """The answer-only target for one CoT target: the same final answer, no chain."""
    answers = CLOSED_ANSWER_TAG.findall(completion)
    if not answers or not answers[-1].strip():
        raise CotlabError(f"a CoT training target needs a closed <answer> tag to build its answer-only control: {completion[-80:]!r}")
    return ANSWER_ONLY_COMPLETION.format(answer=answers[-1].strip())


def answer_only_rows(rows) -> list[dict]:
    """TRL prompt/completion rows (the CoT SFT set, a list or a datasets.Dataset) with every
    assistant completion replaced by its answer-only form; prompts, order and the provenance
    columns are kept, so both runs see the same questions in the same order."""
    out = []
    for row in rows:
        if "prompt" not in row or "completion" not in row:
            raise CotlabError(f"answer-only rows are built from prompt/completion rows, got keys {sorted(row)}")
        completion = [{**turn, "content": answer_only_completion(turn["content"])} for turn in row["completion"]]
        out.append({**row, "completion": completion})
    if not out:
        raise CotlabError("no rows to build the answer-only control from")
    return out
