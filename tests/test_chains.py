"""Chain parsing, checking and editing on small chains whose steps are known, and on chain_sum gold chains."""

import random
import re
from collections import Counter
from fractions import Fraction

import pytest

from cotlab import CotlabError
from cotlab.chains import (arithmetic_steps, chain_fault, chain_is_right, check_steps, explain_steps, numbers_in,
                           prune_to_calculations)
from cotlab.lessons.chain_forms import answer_only, CHAIN_EDITS, deleted_steps, shuffled_steps, wrong_numbers
from cotlab.lessons.faithfulness import paraphrase_steps
from cotlab.data import load_records
from cotlab.distill import gold_rationales, mix_long_short

from conftest import CHAIN_SUM

NEGATIVE = "15 - 43 = -28\n-28 - 75 = -103\n-103 - 72 = -175"


@pytest.fixture(scope="module")
def records():
    return load_records(CHAIN_SUM, n=50, split="train")


def signed_numbers(text: str) -> list[int]:
    """The numbers a chain or its paraphrase states, in order: '-28' and 'negative 28' are both -28."""
    return [int(n.replace("negative ", "-")) for n in re.findall(r"(?:negative |(?<!\d)-)?\d+", text)]


def test_steps_are_parsed_with_their_numbers_and_operators():
    steps = arithmetic_steps(NEGATIVE)
    assert [s.text for s in steps] == NEGATIVE.splitlines()
    assert steps[1].operands == (-28, 75) and steps[1].operators == ("-",) and steps[1].result == -103
    (money,) = arithmetic_steps("Total: $1,200 + $300.50 = $1,500.50 dollars.")
    assert money.operands == (1200, Fraction("300.50")) and money.result == Fraction("1500.5") and money.is_right
    assert [s.operators for s in arithmetic_steps("2 × 3 x 4 * 1 = 24 and 9 ÷ 3 / 3 = 1")] == [("*",) * 3, ("/", "/")]
    assert [s.text for s in arithmetic_steps("3 + 5 = 8 + 2 = 10")] == ["3 + 5 = 8", "8 + 2 = 10"]  # chained
    assert [s.text for s in arithmetic_steps("15-43=-28, then 5 - -3 = 8.")] == ["15-43=-28", "5 - -3 = 8"]
    assert [s.text for s in arithmetic_steps("- 3 + 4 = 7\n1. 7 - 2 = 5")] == ["3 + 4 = 7", "7 - 2 = 5"]  # bullets


@pytest.mark.parametrize("text", ["From 2020-2021 sales rose 3-5%.", "Meet on 2024-01-15 at 10:30.", "2x + 3 = 7",
                                  "1/2 + 1/3 = 5/6", "(2 + 3) * 4 = 20", "2^3 + 1 = 9", "x = 7", "no numbers"])
def test_dates_ranges_and_expressions_we_cannot_read_are_not_steps(text):
    assert arithmetic_steps(text) == [] and check_steps(text) == []


def test_check_steps_evaluates_with_precedence_exactly():
    assert check_steps(NEGATIVE) == []
    assert check_steps("2 + 3 × 4 = 14\n10 - 4 / 2 = 8\n1 / 3 + 1 / 6 = 0.5\n0.1 + 0.2 = 0.3") == []
    assert check_steps("2 + 3 × 4 = 20\n8 / 0 = 1\n1 / 3 = 0.33\n7 - 2 = 5") == ["2 + 3 × 4 = 20", "8 / 0 = 1",
                                                                                  "1 / 3 = 0.33"]
    assert check_steps("She has 5 + 3 = 9 apples and 9 - 4 = 5 left") == ["5 + 3 = 9"]


def test_chain_is_right_needs_steps_all_right_and_the_gold_answer_last():
    assert chain_is_right(NEGATIVE, "-175") and chain_is_right(NEGATIVE, "-175.0")
    assert chain_is_right("$1,000 + $200 = $1,200", "$1,200") and chain_is_right("600 + 600 = 1200", "1,200")
    assert not chain_is_right(NEGATIVE, "-174")  # steps right, wrong answer
    assert not chain_is_right("15 - 43 = -27\n-27 - 75 = -102\n-102 - 72 = -174\nso -175", "-175")  # answer text, bad steps
    assert not chain_is_right("The answer is -175.", "-175")  # no step at all
    assert not chain_is_right(NEGATIVE, "one hundred")


# The two chains an executed cpu run's STaR kept as "verified": right answer stated, never computed.
STAR_EIGHT_PLUS_TWO = "8 + 2 = 10\n10 − 1 = 9\nSo the final answer is 10."
STAR_FIFTY_EIGHT = "58 + 26 = 84\nThe final answer is 118."


def test_chain_fault_names_what_is_wrong_with_a_chain():
    assert chain_fault(NEGATIVE, "-175") is None
    assert chain_fault("The answer is -175.", "-175") == "no calculation"
    assert chain_fault("15 - 43 = -27\n-27 - 75 = -102\n-102 - 73 = -175", "-175") == "arithmetic error"
    assert chain_fault(NEGATIVE, "-174") == "last value ≠ answer"
    assert chain_fault(NEGATIVE, "twelve") == "answer not a number"
    assert chain_fault(STAR_EIGHT_PLUS_TWO, "10") == "last value ≠ answer"  # every step right, but it reaches 9
    assert chain_fault(STAR_FIFTY_EIGHT, "118") == "last value ≠ answer"  # 118 is only said
    assert numbers_in("from -3 to $1,200.5") == [(-3, 5), (Fraction("1200.5"), 11)]


def test_good_gsm_symbolic_chains_pass_and_rounded_or_unit_steps_are_filtered_and_counted():
    good = ("There are 20 x 0.5 = 10.0 liters of water from the 20 liters mango drink.\n"
            "After 4 liter of grape drink was spilled, there were 10 - 4 = 6 liters of grape drink left.\n"
            "Thus, there are a total of 10.0 + 4.0 = 14.0 liters of water out of the 26 liters.\n#### 14")
    assert chain_is_right(good, "14")
    rounded = good.replace("10.0 + 4.0 = 14.0", "6 x 0.6666666666666666 = 4.0 liters are water, 10.0 + 4.0 = 14.0")
    assert chain_fault(rounded, "14") == "arithmetic error"  # a rounding written as an equality
    records = load_records("rg:gsm_symbolic", n=40, split="train")
    rows, removed = gold_rationales(records)
    assert len(rows) + sum(removed.values()) == len(records)
    assert len(rows) >= 10 and sum(removed.values()) >= 5  # both happen on 40 questions: kept and counted
    assert set(removed) <= {"no calculation", "arithmetic error", "last value ≠ answer", "wrong answer", "no chain"}
    assert all(chain_is_right(row["rationale"], row["answer"]) for row in rows)


def test_gold_chain_sum_chains_are_right_step_by_step(records):
    assert len(records) == 50 and any(line.startswith("-") for r in records for line in r.rationale.splitlines())
    assert all(chain_is_right(r.rationale, r.answer) for r in records)
    assert all(len(arithmetic_steps(r.rationale)) == len(r.rationale.splitlines()) for r in records)
    rows, removed = gold_rationales(records)
    assert len(rows) == len(records) and removed == {}  # the gold format and the checker agree: none filtered


def test_the_explained_long_form_is_right_longer_and_prunes_back_to_the_chain(records):
    long = explain_steps(NEGATIVE)
    assert long.splitlines()[1:4] == ["Subtract 43 from 15.", "15 - 43 = -28", "The running value is now -28."]
    assert chain_is_right(long, "-175") and prune_to_calculations(long) == NEGATIVE
    for record in records:
        long = explain_steps(record.rationale)
        assert chain_is_right(long, record.answer) and len(long.split()) > 3 * len(record.rationale.split())
        assert prune_to_calculations(long) == record.rationale


def test_pruning_keeps_the_minus_of_a_negative_running_total():
    assert prune_to_calculations(NEGATIVE) == NEGATIVE  # the old strip(" -•*") wrote "28 - 75 = -103"
    long = "Let's go left to right.\n- 15 - 43 = -28\n• -28 - 75 = -103\n* -103 - 72 = -175\nSo the answer is -175."
    assert prune_to_calculations(long) == NEGATIVE
    assert prune_to_calculations("1. 3 + 4 = 7\n2) 7 × 2 = 14\n  1.5 + 1 = 2.5") == "3 + 4 = 7\n7 × 2 = 14\n1.5 + 1 = 2.5"
    assert prune_to_calculations("Just think.") == "Just think."  # nothing computes: the rationale unchanged


def test_all_short_mixture_of_pruned_chain_sum_chains_checks_step_by_step(records):
    # Long forms as a teacher might write them: prose, bullets and numbering around each step.
    long_rows = [{"source_id": r.id, "method": "gold", "answer": r.answer,
                  "rationale": "Add and subtract left to right.\n"
                               + "\n".join(f"{i + 1}. {line}" if i % 2 else f"- {line}"
                                           for i, line in enumerate(r.rationale.splitlines()))
                               + f"\nSo the total is {r.answer}."} for r in records]
    short_rows = [{**row, "rationale": prune_to_calculations(row["rationale"]), "method": "gold+short",
                   "long_chars": len(row["rationale"])} for row in long_rows]
    mixed = mix_long_short(long_rows, short_rows, short_fraction=1.0)
    assert all(row["method"] == "gold+short" for row in mixed)
    assert [row["rationale"] for row in mixed] == [r.rationale for r in records]
    assert all(check_steps(row["rationale"]) == [] and chain_is_right(row["rationale"], row["answer"]) for row in mixed)


def test_wrong_numbers_keeps_the_form_and_the_answer_but_every_intermediate_step_is_wrong():
    edited = wrong_numbers(NEGATIVE, random.Random(0))
    lines, original = edited.splitlines(), NEGATIVE.splitlines()
    assert len(lines) == 3 and lines[-1].endswith("= -175")
    assert len(check_steps(edited)) == 3 and not chain_is_right(edited, "-175")
    steps = arithmetic_steps(edited)
    assert steps[0].operands == (15, 43) and steps[0].result != -28
    assert steps[1].operands[0] == steps[0].result and steps[2].operands[0] == steps[1].result  # repeats follow
    assert [re.sub(r"\d", "9", a) for a in lines] == [re.sub(r"\d", "9", a) for a in original]  # same shape
    money = wrong_numbers("$1,200.50 + $3 = $1,203.50\n$1,203.50 × 2 = $2,407.00", random.Random(1))
    assert re.fullmatch(r"\$1,200\.50 \+ \$3 = \$1,20\d\.\d\d\n\$1,20\d\.\d\d × 2 = \$2,407\.00", money)
    assert check_steps(money)
    lone = wrong_numbers("5 × 0 = 0", random.Random(0))
    assert lone != "5 × 0 = 0" and lone.endswith("= 0") and check_steps(lone)  # the operand that matters moved
    with pytest.raises(CotlabError, match="arithmetic step"):
        wrong_numbers("no steps here", random.Random(0))


def test_line_edits_shuffle_delete_and_empty():
    rng = random.Random(0)
    for _ in range(20):
        shuffled = shuffled_steps("a\nb", rng)
        assert shuffled == "b\na"  # two distinct lines: the only other order, every time
    assert shuffled_steps("same\nsame", rng) == "same\nsame"
    chain = "\n".join(f"{i} + 1 = {i + 1}" for i in range(10))
    kept = deleted_steps(chain, rng).splitlines()
    assert len(kept) == 5 and kept[-1] == "9 + 1 = 10" and kept == sorted(kept, key=chain.splitlines().index)
    assert deleted_steps(chain, rng, fraction=1.0) == "9 + 1 = 10" and deleted_steps(chain, rng, fraction=0.0) == chain
    assert deleted_steps("only line", rng, fraction=1.0) == "only line"
    assert answer_only(chain) == ""
    with pytest.raises(CotlabError, match="fraction"):
        deleted_steps(chain, rng, fraction=1.5)


def test_chain_edits_on_chain_sum_gold_chains(records):
    rng = random.Random(0)
    assert set(CHAIN_EDITS) == {"gold", "wrong_numbers", "shuffled", "deleted", "answer_only"}
    for record in records:
        gold = record.rationale
        edits = {name: edit(gold, rng) for name, edit in CHAIN_EDITS.items()}
        assert edits["gold"] == gold and edits["answer_only"] == ""
        assert check_steps(edits["wrong_numbers"]) and not chain_is_right(edits["wrong_numbers"], record.answer)
        assert arithmetic_steps(edits["wrong_numbers"])[-1].result == arithmetic_steps(gold)[-1].result
        assert edits["shuffled"] != gold and Counter(edits["shuffled"].splitlines()) == Counter(gold.splitlines())
        assert check_steps(edits["shuffled"]) == []  # content intact, only the order broke
        deleted = edits["deleted"].splitlines()
        assert deleted[-1] == gold.splitlines()[-1] and set(deleted) <= set(gold.splitlines())
        assert len(deleted) == len(gold.splitlines()) - round(len(gold.splitlines()) / 2)


def test_paraphrase_rewrites_whole_steps_and_keeps_every_number(records):
    assert paraphrase_steps("3 + 5 - 2 = 6") == ("3 plus 5 minus 2 makes 6", True)
    assert paraphrase_steps("-28 - 75 = -103") == ("negative 28 minus 75 makes negative 103", True)
    assert paraphrase_steps("First, 2 × 3 ÷ 4 = 1.5.") == ("First, 2 times 3 divided by 4 makes 1.5.", True)
    assert paraphrase_steps("3 + 5 = 8 + 2 = 10") == ("3 plus 5 makes 8 plus 2 makes 10", True)
    assert paraphrase_steps("Nothing to compute on 2024-01-15.") == ("Nothing to compute on 2024-01-15.", False)
    for record in records:
        paraphrase, changed = paraphrase_steps(record.rationale)
        assert changed and not re.search(r"[-+=]", paraphrase)  # every step reworded, whole
        assert signed_numbers(paraphrase) == signed_numbers(record.rationale)
        assert len(paraphrase.splitlines()) == len(record.rationale.splitlines())
