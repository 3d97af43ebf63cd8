"""GRPO rewards on real-looking completions: correct, wrong, malformed and truncated."""

import json

import pytest

from cotlab import CotlabError
from cotlab.data import load_records
from cotlab.rewards import (completion_text, correctness_reward, cosine_length_reward, format_reward,
                            grpo_rows, make_length_reward, reward_functions)

from conftest import CHAIN_SUM

CORRECT = "<think>\n12 + 7 = 19\n19 + 30 = 49\n</think>\n<answer>49</answer>"
WRONG = "<think>\n12 + 7 = 19\n19 + 30 = 59\n</think>\n<answer>59</answer>"
MALFORMED = "12 + 7 + 30 is 49. So the answer is 49."  # right number, no tags
TRUNCATED = "<think>\n12 + 7 = 19\n19 + 30 = 4"  # cut off at max_completion_length
COMPLETIONS = [CORRECT, WRONG, MALFORMED, TRUNCATED]


def test_correctness_uses_the_evaluation_verifier():
    assert correctness_reward(COMPLETIONS, answer=["49"] * 4) == [1.0, 0.0, 1.0, 0.0]
    # Strict: a right last number without a committed answer earns nothing, cut off or not.
    untagged, cut_in_answer = "12 + 7 = 19\n19 + 30 = 49", "<think>\n19 + 30 = 49\n</think>\n<answer>49"
    assert correctness_reward([untagged, cut_in_answer, "<answer>49</answer>"], answer=["49"] * 3) == [0.0, 0.0, 1.0]
    # Conversational completions arrive as message lists.
    assert correctness_reward([[{"role": "assistant", "content": CORRECT}]], answer=["49"]) == [1.0]
    assert completion_text([{"role": "assistant", "content": "a"}, {"role": "assistant", "content": "b"}]) == "ab"


def test_correctness_uses_the_reasoning_gym_scorer_for_rg_rows():
    record = load_records(CHAIN_SUM, n=1, split="test")[0]
    row = grpo_rows([record])[0]
    good = f"<think>adding up</think>\n<answer>{record.answer}</answer>"
    bad = f"<think>adding up</think>\n<answer>{int(record.answer) + 1}</answer>"
    scores = correctness_reward([good, bad], answer=[row["answer"]] * 2, source=[row["source"]] * 2,
                                metadata_json=[row["metadata_json"]] * 2)
    assert scores == [1.0, 0.0]
    assert json.loads(row["metadata_json"]) == json.loads(json.dumps(record.metadata, default=str))
    assert row["prompt"][-1]["content"].endswith(record.question) or record.question in row["prompt"][-1]["content"]


def test_format_reward_wants_both_tags():
    assert format_reward(COMPLETIONS) == [1.0, 1.0, 0.0, 0.0]
    assert format_reward(["<answer>3</answer>"]) == [0.5]


def test_length_reward_shapes_by_correctness_and_truncation():
    # Correct: shorter earns more; wrong: longer earns more; truncated: the penalty.
    assert cosine_length_reward(10, 100, True, False) > cosine_length_reward(90, 100, True, False) > 0
    assert cosine_length_reward(10, 100, False, False) < cosine_length_reward(90, 100, False, False) <= 0
    assert cosine_length_reward(0, 100, True, False) == pytest.approx(1.0)
    assert cosine_length_reward(100, 100, False, False) == pytest.approx(0.0)
    assert cosine_length_reward(50, 100, True, True) == -1.0

    length_reward = make_length_reward(max_length=32)
    assert length_reward.__name__ == "length_reward"
    ids = [[1] * 20, [1] * 20, [1] * 12, [1] * 32]  # the truncated one used the whole budget
    scores = length_reward(COMPLETIONS, completion_ids=ids, answer=["49"] * 4)
    assert scores[0] > 0 > scores[1] and scores[2] > scores[0] and scores[3] == -1.0


def test_reward_functions_follow_weights():
    functions, weights = reward_functions({"correctness": 1.0, "format": 0.2, "length": 0.0}, 64)
    assert [f.__name__ for f in functions] == ["correctness_reward", "format_reward"] and weights == [1.0, 0.2]
    with pytest.raises(CotlabError, match="unknown reward"):
        reward_functions({"speed": 1.0}, 64)
    with pytest.raises(CotlabError, match="every reward weight is zero"):
        reward_functions({"correctness": 0.0}, 64)
