import pytest

from cotlab import CotlabError
from cotlab.prompts import STYLES, build_messages, render_prompt, sft_example, strip_final_answer_line
from cotlab.verify import extract_answer, format_ok


@pytest.mark.parametrize("style", STYLES)
def test_every_style_renders_with_the_chat_template(tokenizer, style):
    text = render_prompt(tokenizer, build_messages("What is 2 + 3?", style))
    assert "What is 2 + 3?" in text
    assert text.endswith("<|im_start|>assistant\n")


def test_think_style_replaces_the_default_system_prompt(tokenizer):
    text = render_prompt(tokenizer, build_messages("What is 2 + 3?", "think"))
    assert "<think>" in text and "named SmolLM" not in text


def test_few_shot_puts_exemplars_before_the_question():
    messages = build_messages("Q?", "few_shot_cot", [("q1", "r1", "1"), ("q2", "r2", "2")])
    assert [m["role"] for m in messages] == ["user", "assistant", "user", "assistant", "user"]
    assert messages[1]["content"].endswith("Answer: 1")


def test_unknown_style():
    with pytest.raises(CotlabError, match="unknown prompting style"):
        build_messages("Q?", "telepathy")


def test_sft_example_is_trl_prompt_completion_and_scores_itself():
    row = sft_example("What is 5 + 9?", "5 + 9 = 14", "14", source_id="x")
    assert set(row) == {"prompt", "completion", "source_id"}
    target = row["completion"][0]["content"]
    assert format_ok(target) and extract_answer(target) == "14"


def test_strip_final_answer_line():
    assert strip_final_answer_line("a\nb\n#### 5") == "a\nb"
