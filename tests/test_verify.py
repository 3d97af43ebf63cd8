import pytest

from cotlab.data import Record, load_records
from cotlab.verify import answers_match, extract_answer, format_ok, grade, is_correct, last_boxed

# Completions in the shapes small models really produce (several copied from SmolLM2 runs).
EXTRACTION_CASES = [
    ("<think>\n5 + 9 = 14\n14 + 7 = 21\n</think>\n<answer>21</answer>", "21"),
    ("<think>1 - 5 = -4\n-4 - 2 = -6</think>\n<answer> -6 </answer>", "-6"),
    ("Natalia sold 48/2 = 24 clips in May.\nNatalia sold 48+24 = 72 clips.\n#### 72", "72"),
    ("So the total is $\\boxed{\\frac{1}{2}}$.", "\\frac{1}{2}"),
    ("12 + 35 = 47\n\nAnswer: 47", "47"),
    ("The answer is 1,080 dollars.", "1080"),
    ("The final answer is: $288.", "288"),
    ("**Answer:** 13", "13"),
    ("1.125 x 1.25 = 1.875\n2.25 x 1.25 = 2.25\n\nThe answer is 2.25.", "2.25"),
    ("First, we add the numbers: 98 + 93 + 77 + 13 = 281.", "281"),
    ("<think>\n6 + 0 = 6\n6 - 1 = 5\n5 + 8 = 13\n</think>\n<answer>13", "13"),  # cut before </answer>
    ("I cannot solve this problem.", None),
    ("", None),
]


@pytest.mark.parametrize("completion,expected", EXTRACTION_CASES)
def test_extract_answer(completion, expected):
    assert extract_answer(completion) == expected


def test_format_check():
    assert format_ok("<think>\n5 + 9 = 14\n</think>\n<answer>14</answer>")
    assert not format_ok("<think>5 + 9 = 14</think>")  # no answer
    assert not format_ok("<think>\n5 + 9 = 14\n</think>\n<answer>14</answer> and more text")
    assert not format_ok("<think>\n5 + 9 = 14\n")  # truncated mid-chain
    assert not format_ok("14")


@pytest.mark.parametrize("prediction,gold,expected", [
    ("72", "72", True), ("72.0", "72", True), ("1,080", "1080", True), ("$5", "5", True),
    ("0.5", "\\frac{1}{2}", True), ("71", "72", False), (None, "72", False), ("seventy", "72", False),
])
def test_answers_match(prediction, gold, expected):
    assert answers_match(prediction, gold) is expected


def test_reasoning_gym_scorer_is_used_for_rg_records():
    record = load_records("rg:gsm_symbolic", n=1, split="test")[0]
    assert is_correct(record, record.answer)
    # gsm_symbolic's own scorer gives 0.01 to a wrong number: that must count as wrong.
    assert not is_correct(record, str(int(float(record.answer)) + 1))
    assert not is_correct(record, None)


def test_plain_records_use_math_verify():
    record = Record(id="x", question="q", answer="\\frac{3}{4}", source="file.jsonl")
    assert is_correct(record, "0.75")
    assert not is_correct(record, "0.7")


# Strict reading: an answer the completion commits to; lenient adds an unclosed tag and the last number.
STRICT_LENIENT_CASES = [
    ("<think>12 + 7 = 19</think>\n<answer>19</answer>", "19", "19"),
    ("<think>12 + 7 = 19\n19 + 30 = 4", None, "4"),  # cut off mid-chain: only the last number
    ("<think>6 + 8 = 14</think>\n<answer>14", None, "14"),  # cut before </answer>
    ("12 + 7 + 30 = 49", None, "49"),  # untagged
    ("So the answer is 49.", "49", "49"),
    ("The final answer is $\\frac{1}{2}$.", "\\frac{1}{2}", "\\frac{1}{2}"),
    ("Answer: 47", "47", "47"),
    ("First $\\boxed{3}$, then $\\boxed{\\frac{\\sqrt{3}}{2}}$.", "\\frac{\\sqrt{3}}{2}", "\\frac{\\sqrt{3}}{2}"),
    ("so 40 + 2 = 42\n#### 42", "42", "42"),
]


@pytest.mark.parametrize("completion,strict,lenient", STRICT_LENIENT_CASES)
def test_strict_and_lenient_readings(completion, strict, lenient):
    assert extract_answer(completion, strict=True) == strict
    assert extract_answer(completion) == lenient


def test_grade_reports_both_readings():
    record = Record(id="x", question="q", answer="49", source="file.jsonl")
    assert grade(record, "12 + 7 + 30 = 49") == {"prediction": None, "correct": False,
                                                 "prediction_lenient": "49", "correct_lenient": True}
    assert grade(record, "<answer>49</answer>")["correct"] is True


@pytest.mark.parametrize("text,expected", [
    ("$\\boxed{\\left( 3, \\frac{\\pi}{2} \\right)}$", "\\left( 3, \\frac{\\pi}{2} \\right)"),
    ("so $\\boxed 5$.", "5"),
    ("\\fbox{\\text{(B)}}", "\\text{(B)}"),
    ("\\boxed{1} and later \\boxed{2}", "2"),
    ("\\boxed{1} and a cut-off \\boxed{\\frac{1}{", None),
    ("no box here", None),
])
def test_last_boxed(text, expected):
    assert last_boxed(text) == expected


# math-verify behind answers_match: the equivalences MATH answers need.
@pytest.mark.parametrize("prediction,gold,expected", [
    ("0.5", "\\frac{1}{2}", True), ("\\frac{1}{2}", "0.5", True),
    ("\\sqrt{2}/2", "\\frac{\\sqrt2}{2}", True), ("\\frac{\\sqrt{2}}{2}", "\\sqrt{2}/2", True),
    ("(1,2]", "(1, 2]", True), ("(1,2)", "(1,2]", False), ("[1,2]", "(1,2]", False),
    ("B", "\\text{(B)}", True), ("(B)", "\\text{(B)}", True), ("\\text{(C)}", "\\text{(B)}", False),
    ("30", "30^\\circ", True), ("30^{\\circ}", "30", True), ("31", "30^\\circ", False),
    ("1, 2", "1,2", True), ("12", "1,2", False),  # a pair, not a thousands separator
])
def test_math_equivalences(prediction, gold, expected):
    assert answers_match(prediction, gold) is expected


def test_word_answers_ignore_case_and_spacing():
    record = load_records("rg:syllogism", n=1)[0]
    other = "No" if record.answer == "Yes" else "Yes"
    # reasoning-gym's exact-match scorer alone would call "yes" wrong for "Yes".
    for said in (record.answer.lower(), f"  {record.answer.upper()} ", record.answer):
        assert is_correct(record, said)
    assert not is_correct(record, other.lower())
    assert answers_match("new   york", "New York") and not answers_match("new jersey", "New York")
