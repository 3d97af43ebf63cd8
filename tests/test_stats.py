"""Statistics on synthetic numbers, checked against values worked out by hand or published:
Wilson intervals (Wilson 1927; Newcombe 1998, single proportions, Table I), exact McNemar p-values as binomial tails
worked by hand, Student t quantiles from the standard table, and Newcombe's (1998) own worked
examples for the difference of two independent proportions."""

import hashlib
import math
import statistics

import pytest

from cotlab import CotlabError
from cotlab.stats import (accuracy_phrase, across_seeds, all_controls, compare_paired, difference_interval,
                          difference_verdict, eval_set_hash, fisher_exact, holm, mcnemar_exact, mde_paired, mde_phrase,
                          mde_two_proportions, paired_mde_phrase, paired_outcomes, paired_power, paired_verdict,
                          seeds_sentence, verdict_with_mde, wilson_interval, with_holm)


def rows(pattern: str, prefix: str = "q") -> list[dict]:
    """Evaluation rows from a string of 1s (right) and 0s (wrong), one per question."""
    return [{"id": f"{prefix}{i}", "correct": c == "1"} for i, c in enumerate(pattern)]


def test_wilson_interval_matches_published_values():
    # 0/10: upper end z²/(n+z²) = 3.8415/13.8415 (closed form at k=0); 5/10 worked by hand:
    # centre 0.5, half 1.96/1.38415·√(0.025 + 0.009604) = 0.2634.
    assert wilson_interval(0, 10) == (0.0, pytest.approx(0.2775, abs=1e-4))
    assert wilson_interval(5, 10) == pytest.approx((0.2366, 0.7634), abs=1e-4)
    assert wilson_interval(10, 10) == (pytest.approx(0.7225, abs=1e-4), 1.0)  # the mirror of 0/10
    # Newcombe (1998), Stat Med 17:857, Table I, method 3 (score), his four examples.
    published = {(81, 263): (0.2553, 0.3662), (15, 148): (0.0624, 0.1605), (0, 20): (0.0, 0.1611),
                 (1, 29): (0.0061, 0.1718)}
    for counts, interval in published.items():
        assert wilson_interval(*counts) == pytest.approx(interval, abs=1e-4), counts
    low, high = wilson_interval(0, 1)
    assert high - low > 0.5  # never zero width, however few questions
    assert wilson_interval(5, 10, 0.99)[0] < wilson_interval(5, 10)[0]  # wider at higher confidence


@pytest.mark.parametrize("args", [(0, 0), (3, 2), (-1, 5), (1, 5, 1.0), (1, 5, 0)])
def test_wilson_interval_rejects_impossible_counts(args):
    with pytest.raises(CotlabError):
        wilson_interval(*args)


def test_accuracy_phrase():
    # 19/50: p=.38, centre (.38+.03841)/1.07683=.3885, half 1.8202·√(.004712+.000384)=.1299 → 26–52%.
    assert accuracy_phrase(19, 50) == "38% (95% CI 26–52%, n=50)"
    assert accuracy_phrase(0, 10) == "0% (95% CI 0–28%, n=10)"
    assert accuracy_phrase(5, 10) == "50% (95% CI 24–76%, n=10)"


def test_paired_outcomes_counts_each_kind_of_question():
    a = rows("110010")
    b = rows("101000")
    assert paired_outcomes(a, b) == {"wins": 2, "losses": 1, "both_right": 1, "both_wrong": 2, "n": 6}
    assert paired_outcomes(list(reversed(a)), b) == paired_outcomes(a, b)  # matched by id, not position


def test_paired_outcomes_refuses_different_questions():
    with pytest.raises(CotlabError, match="same questions"):
        paired_outcomes(rows("101"), rows("1010"))
    with pytest.raises(CotlabError, match="same questions"):
        paired_outcomes(rows("101"), rows("101", prefix="other"))
    with pytest.raises(CotlabError, match="twice"):
        paired_outcomes(rows("11") + rows("0"), rows("110"))
    with pytest.raises(CotlabError, match="'correct'"):
        paired_outcomes([{"id": "q0"}], rows("1"))


def test_mcnemar_exact_is_the_two_sided_binomial_tail():
    assert mcnemar_exact(18, 0) == pytest.approx(2 * 0.5**18)
    assert mcnemar_exact(5, 1) == pytest.approx(0.21875)  # 2·(1 + 6)/64
    assert mcnemar_exact(10, 2) == pytest.approx(2 * (1 + 12 + 66) / 4096)  # 0.03857
    assert mcnemar_exact(0, 0) == 1.0  # no discordant pairs, no evidence
    assert mcnemar_exact(3, 3) == 1.0  # doubling a tail past one half is capped
    assert mcnemar_exact(1, 0) == 1.0  # 2·0.5
    for wins, losses in [(18, 0), (5, 1), (7, 3), (40, 25)]:
        assert mcnemar_exact(wins, losses) == mcnemar_exact(losses, wins)
    assert 0 < mcnemar_exact(600, 400) < 1e-9  # large counts stay exact, no overflow
    with pytest.raises(CotlabError):
        mcnemar_exact(-1, 3)


def test_compare_paired_and_its_verdict():
    base = rows("0" * 18 + "1" * 12 + "0" * 20)
    sft = rows("1" * 18 + "1" * 12 + "0" * 20)
    result = compare_paired(sft, base)
    assert (result["wins"], result["losses"], result["n"]) == (18, 0, 50)
    assert result["accuracy_a"] == pytest.approx(30 / 50) and result["accuracy_b"] == pytest.approx(12 / 50)
    assert result["difference"] == pytest.approx(18 / 50)
    assert result["p_value"] == pytest.approx(2 * 0.5**18)
    assert paired_verdict(result) == "sft beats base: 18 questions fixed, 0 broken, exact McNemar p = 7.6e-06"

    flipped = paired_verdict(compare_paired(base, sft, a="rl", b="sft"))
    assert flipped == "rl is worse than sft: 0 questions fixed, 18 broken, exact McNemar p = 7.6e-06"

    # 5 fixed, 3 broken: p = 2·(1 + 8 + 28 + 56)/256 = 0.7266
    noisy = compare_paired(rows("11111000" + "1" * 10), rows("00000111" + "1" * 10))
    assert paired_verdict(noisy) == ("sft vs base: no difference we can tell from noise "
                                     "(5 questions fixed, 3 broken, exact McNemar p = 0.73)")
    assert "1 question fixed" in paired_verdict(compare_paired(rows("10"), rows("01")))


def test_paired_verdict_uses_alpha():
    result = compare_paired(rows("1" * 10 + "00"), rows("0" * 10 + "11"))  # 10 vs 2: p = 0.0386
    assert paired_verdict(result).startswith("sft beats base:")
    assert paired_verdict(result, alpha=0.01).startswith("sft vs base: no difference")


def test_holm_reproduces_the_textbook_adjustment():
    # R: p.adjust(c(0.01, 0.04, 0.03, 0.005), "holm") = 0.03 0.06 0.06 0.02 (Holm 1979's step-down:
    # 4·0.005, 3·0.01, 2·0.03, then 1·0.04 raised to the running maximum 0.06).
    adjusted = holm({"a": 0.01, "b": 0.04, "c": 0.03, "d": 0.005})
    assert adjusted == pytest.approx({"a": 0.03, "b": 0.06, "c": 0.06, "d": 0.02})
    assert list(adjusted) == ["a", "b", "c", "d"]
    assert holm({"x": 0.4, "y": 0.9}) == {"x": 0.8, "y": 0.9}  # capped and kept in order
    assert holm({"only": 0.03}) == {"only": 0.03} and holm({}) == {}
    with pytest.raises(CotlabError, match="must be in"):
        holm({"bad": 1.5})


def test_paired_verdict_of_a_family_follows_the_holm_adjusted_p():
    strong = compare_paired(rows("1" * 10 + "00"), rows("0" * 10 + "11"))  # 10 vs 2: raw p = 0.0386
    family = with_holm({"one": strong, "two": {**strong, "p_value": 0.5}})
    assert family["one"]["p_holm"] == pytest.approx(2 * 0.0386, abs=1e-3) and family["one"]["family_size"] == 2
    sentence = paired_verdict(family["one"])
    assert sentence.startswith("sft vs base: no difference")  # raw p < 0.05, adjusted p > 0.05
    assert "exact McNemar p = 0.039" in sentence and "Holm-adjusted p = 0.077 over 2 tests" in sentence
    assert paired_verdict(with_holm({"one": strong})["one"]).startswith("sft beats base:")


def test_fisher_exact_reproduces_the_tea_tasting_table():
    # Fisher's lady tasting tea, 3 of 4 vs 1 of 4: two-sided p = 17/35 (1 + 16 + 16 + 1 of 70 tables, the
    # observed one and those as or less likely; R: fisher.test(matrix(c(3, 1, 1, 3), 2))$p.value = 0.4857).
    assert fisher_exact(3, 4, 1, 4) == pytest.approx(34 / 70)
    assert fisher_exact(4, 4, 0, 4) == pytest.approx(2 / 70)
    assert fisher_exact(2, 4, 2, 4) == 1.0
    assert fisher_exact(5, 10, 5, 10) == 1.0
    with pytest.raises(CotlabError):
        fisher_exact(5, 4, 0, 4)


def test_difference_interval_reproduces_newcombe_1998():
    # Newcombe (1998), Stat Med 17:873, Table II, method 10 (hybrid score), his examples (a)-(h).
    published = {(56, 70, 48, 80): (0.0524, 0.3339), (9, 10, 3, 10): (0.1705, 0.8090),
                 (6, 7, 2, 7): (0.0582, 0.8062), (5, 56, 0, 29): (-0.0381, 0.1926),
                 (0, 10, 0, 20): (-0.1611, 0.2775), (0, 10, 0, 10): (-0.2775, 0.2775),
                 (10, 10, 0, 20): (0.6791, 1.0), (10, 10, 0, 10): (0.6075, 1.0)}
    for counts, interval in published.items():
        assert difference_interval(*counts) == pytest.approx(interval, abs=1e-4), counts


def test_difference_verdict_names_direction_only_when_the_interval_excludes_zero():
    higher = difference_verdict(56, 70, 48, 80)
    assert higher.startswith("in-distribution is higher than out-of-distribution:")
    assert "80%" in higher and "60%" in higher and "+20 points" in higher and "CI +5 to +33" in higher
    lower = difference_verdict(48, 80, 56, 70, a="ood", b="id")
    assert lower.startswith("ood is lower than id:") and "-20 points" in lower
    unclear = difference_verdict(5, 56, 0, 29)  # Newcombe's (d): interval -0.038 to 0.193 spans zero
    assert unclear.startswith("in-distribution vs out-of-distribution: no difference we can tell from noise")


def test_across_seeds_t_interval():
    result = across_seeds([0.3, 0.4, 0.5])
    # mean 0.4, s = 0.1, t_{0.975, 2} = 4.303 from the table: half-width 4.303 · 0.1/√3 = 0.2484
    assert result["mean"] == pytest.approx(0.4) and result["std"] == pytest.approx(0.1) and result["n_runs"] == 3
    assert result["interval"] == pytest.approx((0.4 - 0.2484, 0.4 + 0.2484), abs=2e-4)
    one = across_seeds([0.7])
    assert one["mean"] == 0.7 and one["interval"] is None and one["n_runs"] == 1
    with pytest.raises(CotlabError):
        across_seeds([])


@pytest.mark.parametrize("n_runs, t_975, t_995", [(2, 12.706, 63.657), (4, 3.182, 5.841), (5, 2.776, 4.604),
                                                  (11, 2.228, 3.169), (31, 2.042, 2.750)])
def test_across_seeds_uses_the_t_table(n_runs, t_975, t_995):
    values = [math.sin(i) for i in range(n_runs)]  # any spread will do
    se = statistics.stdev(values) / math.sqrt(n_runs)
    for confidence, t in ((0.95, t_975), (0.99, t_995)):
        low, high = across_seeds(values, confidence)["interval"]
        assert (high - low) / 2 / se == pytest.approx(t, abs=1e-3)


def test_eval_set_hash():
    assert eval_set_hash(["a", "b"]) == "fcd127ffa101"  # printf 'a\nb' | sha1sum
    assert eval_set_hash(["q3", "q1", "q2", "q1"]) == hashlib.sha1(b"q1\nq2\nq3").hexdigest()[:12]
    assert eval_set_hash(["b", "a"]) == eval_set_hash(["a", "b"])  # order does not matter
    assert eval_set_hash(["a", "b"]) != eval_set_hash(["a", "c"])
    assert compare_paired(rows("10"), rows("01"))["eval_set"] == eval_set_hash(["q0", "q1"])
    with pytest.raises(CotlabError):
        eval_set_hash([])


def test_paired_power_is_the_exact_binomial_sum():
    # Six questions, every one won: 6-0 gives McNemar p = 2/64 < 0.05, 5-0 gives 0.0625: only D=6 all won rejects.
    assert paired_power(6, 1.0, 1.0) == pytest.approx(1.0)
    assert paired_power(5, 1.0, 1.0) == 0.0
    # A wins on half the questions and never loses: rejected only when all six are discordant, 0.5^6.
    assert paired_power(6, 0.5, 0.5) == pytest.approx(0.5**6)
    assert paired_power(30, 0.0, 0.4) < 0.05  # no difference: the test's own size, below alpha
    with pytest.raises(CotlabError):
        paired_power(10, 0.5, 0.2)


def test_mde_paired_shrinks_with_n_and_is_none_when_nothing_can_show():
    assert mde_paired(4) is None  # 4 wins, 0 losses: p = 0.125
    sizes = [mde_paired(n, 0.3) for n in (12, 30, 100)]
    assert sizes == sorted(sizes, reverse=True) and sizes[-1] < 0.25
    found = mde_paired(30, 0.3)
    assert paired_power(30, found, max(0.3, found)) >= 0.8 > paired_power(30, found - 0.005, max(0.3, found - 0.005))
    assert mde_paired(16, 1.0) > mde_paired(16, 0.0)  # a sign test on a continuous score: every question discordant


def test_mde_two_proportions_matches_cohens_table():
    # Cohen's tables: h = 0.2 needs 392 per group (80% power, two-sided 0.05); around p = 0.5, h = 0.2 is ~10 points.
    assert mde_two_proportions(392, 392, 0.5) == pytest.approx(0.0993, abs=1e-3)
    assert mde_two_proportions(50, 50, 0.0) > mde_two_proportions(200, 200, 0.0)
    assert mde_two_proportions(50, 50, 1.0) > 0  # nothing can rise above 100%: the fall is given
    assert mde_two_proportions(1, 1, 0.5) is None


def test_mde_phrase_and_all_controls():
    assert mde_phrase(0.314, 30, "paired") == "minimum detectable effect 31 points (80% power, α = 0.05, n=30, paired)"
    assert mde_phrase(None, 4, "paired") == "no effect is detectable at 80% power, α = 0.05 with n=4 (paired)"
    both = all_controls({"a": {"passed": True}, "b": {"passed": False}}, "x")
    assert both == {"passed": False, "what": "x", "controls": {"a": {"passed": True}, "b": {"passed": False}}}
    assert all_controls({"a": {"passed": True}}, "x")["passed"] and not all_controls({}, "x")["passed"]


def _seed_rows(patterns: list[str]) -> dict:
    return {seed: rows(p) for seed, p in enumerate(patterns)}


def test_over_seeds_pools_per_question_and_gives_a_t_interval_across_seeds():
    from cotlab.stats import across_seeds, over_seeds

    start = rows("1111100000")
    over = over_seeds(_seed_rows(["1111111100", "1111111000", "1111111110"]), start, "dpo", "sft")
    assert over["n_seeds"] == 3 and over["n"] == 10 and (over["wins"], over["losses"]) == (4, 0)
    assert over["seeds_difference"] == pytest.approx({"0": 0.3, "1": 0.2, "2": 0.4})
    expected = across_seeds([0.3, 0.2, 0.4])
    assert over["across_seeds"]["interval"] == pytest.approx(expected["interval"]) and over["across_seeds"]["mean"] == pytest.approx(0.3)


@pytest.mark.parametrize("patterns,start,expected", [
    (["1111111111" * 3] * 3, "0000000000" * 3, "dpo is better than sft"),         # every seed, every question
    (["0000000000" * 3] * 3, "1111111111" * 3, "dpo is worse than sft"),
    (["1111100000" * 3, "1111100000" * 3, "1111100000" * 3], "1111100000" * 3, "answered alike on every seed"),
    (["1111110000" * 3, "1111000000" * 3, "1111100000" * 3], "1111100000" * 3, "no difference between dpo and sft beyond noise"),
    (["1111111111" * 3], "0000000000" * 3, "on one training seed"),
])
def test_over_seeds_verdict_wording_follows_the_result(patterns, start, expected):
    from cotlab.stats import over_seeds, over_seeds_verdict, paper_claim_sentence

    over = over_seeds(_seed_rows(patterns), rows(start), "dpo", "sft")
    sentence = over_seeds_verdict(over)
    assert expected in sentence and ("minimum detectable effect" in sentence or "no effect is detectable" in sentence)
    claim = paper_claim_sentence(over, "A Paper", "dpo beats sft")
    assert ("this run agrees" in claim) == (expected == "dpo is better than sft")


def test_over_seeds_names_no_winner_when_the_seeds_disagree_with_the_questions():
    """Per question DPO wins (sign test clears alpha) but one seed is far below: the seeds' interval
    spans zero, so no direction is claimed."""
    from cotlab.stats import over_seeds, over_seeds_verdict, over_seeds_winner

    start = "0" * 30
    over = over_seeds(_seed_rows(["1" * 30, "1" * 30, "1" * 10 + "0" * 20]), rows(start), "dpo", "sft")
    assert over["p_value"] < 0.05 and over["across_seeds"]["interval"][0] < 0
    assert over_seeds_winner(over) is None and "disagree" in over_seeds_verdict(over)


def test_verdict_with_mde_puts_the_detectable_effect_beside_every_direction():
    right, wrong = {"correct": True}, {"correct": False}
    a = [{"id": i, **(right if i < 20 else wrong)} for i in range(30)]
    b = [{"id": i, **(right if i < 8 else wrong)} for i in range(30)]
    better, worse, same = compare_paired(a, b, "sft", "base"), compare_paired(b, a, "base", "sft"), compare_paired(a, a, "sft", "sft")
    for comparison, start in ((better, "sft beats base"), (worse, "base is worse than sft"), (same, "sft vs sft: no difference")):
        sentence = verdict_with_mde(comparison)
        assert sentence.startswith(start) and sentence.endswith(paired_mde_phrase(comparison))
    assert paired_mde_phrase(better) == mde_phrase(mde_paired(30, 12 / 30), 30, "paired, exact McNemar")
    assert "minimum detectable effect" in verdict_with_mde(same)  # no disagreement: every difference assumed one way
    tiny = compare_paired(a[:3], b[:3], "sft", "base")
    assert "no effect is detectable" in verdict_with_mde(tiny)
    assert "before Holm's adjustment" in paired_mde_phrase({**better, "family_size": 3})


def test_seeds_sentence_says_when_a_comparison_rests_on_one_seed():
    one = seeds_sentence(1, "The comparison")
    assert one.startswith("The comparison rests on one training seed") and "not for the methods in general" in one
    assert seeds_sentence(3, "The comparison") == "The comparison is repeated over 3 training seeds"
    with pytest.raises(CotlabError):
        seeds_sentence(0, "x")
