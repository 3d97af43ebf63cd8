"""pass@k curves, coverage, crossings and the sentences notebook 08 prints, on synthetic samples
whose pass@k is worked out by hand."""

import math

import pytest

from cotlab import CotlabError
from cotlab.lessons.rl_expansion import (coverage, coverage_control, coverage_sentence, curve_crossing, expansion_verdict, k_grid,
                                         paired_at_k, pass_at_k_curve, pass_at_k_figure, sample_counts)
from cotlab.logs import logged
from cotlab.stats import trend_verdict


def sampled(counts: list[int], n: int = 8, prefix: str = "q") -> list[dict]:
    """Rows as cotlab.evaluate writes them with k = n: question i has counts[i] right samples of n."""
    return [{"id": f"{prefix}{i}", "samples": [{"correct": j < c, "prediction": "1" if j < c else "0"} for j in range(n)]}
            for i, c in enumerate(counts)]


# Base: every question right in 2 of 8 samples.  RL: 24 questions always right, 6 never.
BASE = sampled([2] * 30)
SHARP = sampled([8] * 24 + [0] * 6)


def test_pass_at_k_curve_and_coverage_match_the_hand_computed_values():
    rows = sampled([1, 0, 4], n=4)
    assert sample_counts(rows) == {"q0": (4, 1), "q1": (4, 0), "q2": (4, 4)}
    assert pass_at_k_curve(rows, [1, 2, 4]) == pytest.approx([(0.25 + 0 + 1) / 3, (0.5 + 0 + 1) / 3, (1 + 0 + 1) / 3])
    assert coverage(rows) == (2, 3)
    # 2 of 8 right: pass@4 = 1 - C(6,4)/C(8,4) = 1 - 15/70
    assert pass_at_k_curve(BASE, [1, 4, 8]) == pytest.approx([0.25, 1 - 15 / 70, 1.0])
    with pytest.raises(CotlabError, match="samples"):
        pass_at_k_curve([{"id": "q", "correct": True}], [1])


def test_k_grid_is_powers_of_two_up_to_k_max():
    assert k_grid(8) == [1, 2, 4, 8]
    assert k_grid(6) == [1, 2, 4, 6]
    assert k_grid(1) == [1]
    with pytest.raises(CotlabError):
        k_grid(0)


def test_paired_at_k_counts_questions_and_is_mcnemar_at_k_equals_n():
    first = paired_at_k(SHARP, BASE, 1, "grpo", "base")
    assert (first["wins"], first["losses"], first["ties"], first["n"]) == (24, 6, 0, 30)
    assert first["pass_a"] == pytest.approx(0.8) and first["pass_b"] == pytest.approx(0.25)
    assert first["p_value"] == pytest.approx(2 * sum(math.comb(30, i) for i in range(7)) / 2**30)
    last = paired_at_k(SHARP, BASE, 8, "grpo", "base")
    assert (last["wins"], last["losses"], last["ties"]) == (0, 6, 24)
    assert last["p_value"] == pytest.approx(2 / 2**6)  # exact McNemar on coverage: 6 discordant, all one way
    with pytest.raises(CotlabError, match="same questions"):
        paired_at_k(SHARP, sampled([1] * 30, prefix="other"), 1)


def test_curve_crossing_finds_the_first_sign_change_and_skips_ties():
    ks = [1, 2, 4, 8]
    sharp, base = pass_at_k_curve(SHARP, ks), pass_at_k_curve(BASE, ks)
    assert curve_crossing(ks, sharp, base) == {"after": 4, "before": 8, "a_above_first": True}
    assert curve_crossing(ks, base, sharp) == {"after": 4, "before": 8, "a_above_first": False}
    assert curve_crossing([1, 2, 4], [0.5, 0.5, 0.6], [0.5, 0.4, 0.7]) == {"after": 2, "before": 4, "a_above_first": True}
    assert curve_crossing(ks, [0.1, 0.2, 0.3, 0.4], [0.2, 0.3, 0.4, 0.5]) is None
    with pytest.raises(CotlabError):
        curve_crossing(ks, [0.1], [0.2])


def test_expansion_verdict_says_sharpening_widening_or_noise():
    ks = [1, 2, 4, 8]
    cross = curve_crossing(ks, pass_at_k_curve(SHARP, ks), pass_at_k_curve(BASE, ks))
    sharpens = expansion_verdict(paired_at_k(SHARP, BASE, 1, "grpo", "sft"), paired_at_k(SHARP, BASE, 8, "grpo", "sft"), cross,
                                 coverage_control(BASE, "sft"))
    assert sharpens.startswith("grpo sharpens sft") and "cross between k=4 and k=8" in sharpens
    assert "minimum detectable effect" in sharpens and "n=30, paired sign test" in sharpens
    # The flipped branch: the broad stage against the sharp one reaches questions the other never did.
    widens = expansion_verdict(paired_at_k(BASE, SHARP, 1, "sft", "base"), paired_at_k(BASE, SHARP, 8, "sft", "base"), cross,
                               coverage_control(SHARP))
    assert widens.startswith("sft widens what base reaches")
    same = expansion_verdict(paired_at_k(BASE, BASE, 1), paired_at_k(BASE, BASE, 8), None, coverage_control(BASE))
    assert "no difference we can tell from noise" in same and "do not cross for k up to 8" in same
    # Better at k=1, and too few questions at k=K to tell: sharpening without evidence on reach.
    few = sampled([8] * 24 + [0] * 6)[:26], sampled([2] * 30)[:26]
    partial = expansion_verdict(paired_at_k(*few, 1, "grpo", "sft"), paired_at_k(*few, 8, "grpo", "sft"), None,
                                coverage_control(few[1], "sft"))
    assert partial.startswith("grpo sharpens sft at k=1; at k=8 the two cannot be told apart")


def test_no_crossover_verdict_when_the_start_solves_nothing():
    blind = sampled([0] * 30)
    control = coverage_control(blind, "base")
    assert control == {"passed": False, "start": "base", "covered": 0, "n": 30, "what": control["what"]}
    assert coverage_control(sampled([0] * 29 + [1]), "base")["passed"]  # one question within K is enough
    sentence = expansion_verdict(paired_at_k(SHARP, blind, 1, "sft", "base"), paired_at_k(SHARP, blind, 8, "sft", "base"),
                                 None, control)
    assert sentence.startswith("sft vs base: no verdict, the instrument could not see the effect: base solved 0 of 30")
    assert "widens" not in sentence and "sharpens" not in sentence  # the same numbers with coverage above 0 say widens


def test_logged_reads_one_metric_in_step_order():
    history = [{"step": 1, "entropy": 0.9}, {"step": 1, "loss": 0.1}, {"step": 2, "entropy": 0.7}, {"train_runtime": 3.0}]
    assert logged(history, "entropy") == ([1, 2], [0.9, 0.7])
    assert logged(history, "missing") == ([], [])


def test_trend_verdict_claims_a_direction_only_beyond_block_noise():
    falling = [1.0, 0.98, 1.02, 0.99, 1.01, 0.97, 0.5, 0.52, 0.48, 0.51, 0.49, 0.53]
    fell = trend_verdict(falling)
    assert fell.startswith("entropy fell during training") and "over 3 block means" in fell and "rough check" in fell
    assert trend_verdict(falling[::-1]).startswith("entropy rose during training")
    assert trend_verdict([1, 0] * 6).startswith("entropy: no trend detected")
    assert "too few" in trend_verdict([1.0, 0.5, 0.2])


def test_trend_verdict_tests_block_means_not_single_steps():
    # A slow drift, as autocorrelated steps look: t intervals over the 6 single steps of each half
    # would not overlap (0.975 ± 0.02 vs 0.915 ± 0.02), over 3 block means per half (df = 2) they do.
    drift = [1.0 - 0.01 * i for i in range(12)]
    assert trend_verdict(drift).startswith("entropy: no trend detected")
    short = trend_verdict([1.0, 0.9, 0.5, 0.4, 0.3, 0.2, 0.1, 0.0])  # 4 per half: blocks of 1 step
    assert short.startswith("entropy: mean 0.7 over the first 4 logged steps and 0.15 over the last 4; descriptive only")
    assert "fell" not in short


def test_pass_at_k_figure_bands_are_wilson_intervals(tmp_path):
    from cotlab.stats import wilson_interval

    ks = [1, 2, 4, 8]
    none = sampled([0] * 30)
    fig = pass_at_k_figure(ks, {"base": pass_at_k_curve(none, ks), "grpo": pass_at_k_curve(SHARP, ks)}, 30, tmp_path / "p.png")
    assert (tmp_path / "p.png").stat().st_size > 1000
    ax = fig.axes[0]
    band = ax.collections[0].get_paths()[0].vertices[:, 1]
    assert band.min() == 0 and band.max() == pytest.approx(wilson_interval(0, 30)[1])  # pass@k = 0 of 30: still a band
    assert "95% Wilson intervals, n=30" in ax.get_title()


def test_coverage_sentence_names_a_stage_that_solved_nothing():
    sentence = coverage_sentence({"base": (0, 12), "grpo": (5, 12)}, 8)
    assert sentence.startswith("Coverage at k=8: base 0% (95% CI 0–24%, n=12); grpo 42%")
    assert sentence.endswith("base solved no question within 8 samples.")
    assert "solved no question" not in coverage_sentence({"base": (1, 12)}, 8)
