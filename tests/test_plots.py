"""Each lesson figure drawn on fixture numbers: the file is written and the axes hold what was given."""

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import pytest

from cotlab import plots


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


def _bars(ax):
    return len(ax.patches)


def test_acceptance_and_coverage(tmp_path):
    log = {"correct_rate": 0.5, "acceptance": 0.25, "samples": [{"correct": False}, {"correct": True}, {"correct": False}]}
    fig = plots.acceptance_and_coverage({0.5: [log, log], 1.0: [log]}, k=3, path=tmp_path / "a.png")
    left, right = fig.axes
    assert (tmp_path / "a.png").is_file()
    assert _bars(left) == 4 and len(right.lines) == 2  # 2 rates x 2 temperatures; one coverage line per T
    assert list(right.lines[0].get_ydata()) == [0.0, 1.0, 1.0]


def test_length_histograms_skip_empty_sets(tmp_path):
    fig = plots.length_histograms({"gold": [{"rationale": "a b c"}, {"rationale": "a"}], "self": []}, tmp_path / "h.png")
    assert (tmp_path / "h.png").is_file() and len(fig.axes[0].get_legend().get_texts()) == 1


def test_pair_lengths(tmp_path):
    fig = plots.pair_lengths([{"chosen_tokens": 10, "rejected_tokens": 20}] * 3, "pairs", tmp_path / "p.png")
    assert (tmp_path / "p.png").is_file() and _bars(fig.axes[0]) == 24  # 12 bins for each of two sides


def test_accuracy_by_length_lines(tmp_path):
    bins = [{"low": 1, "high": 3, "accuracy": 1.0}, {"low": 4, "high": 8, "accuracy": 0.5}]
    fig = plots.accuracy_by_length_lines({"base": bins, "sft": bins}, tmp_path / "l.png")
    assert (tmp_path / "l.png").is_file() and len(fig.axes[0].lines) == 2
    assert list(fig.axes[0].lines[0].get_xdata()) == [2.0, 6.0]
    counted = [{**bins[0], "correct": 4, "n": 4}, {**bins[1], "correct": 2, "n": 4}]
    fig = plots.accuracy_by_length_lines({"sft, 3 terms": counted})
    caps = fig.axes[0].containers[0].lines[2][0].get_segments()  # the error bar of each point
    assert [tuple(seg[:, 1].round(3)) for seg in caps] == [(0.51, 1.0), (0.15, 0.85)]  # Wilson 4/4 and 2/4
    assert "Wilson 95% CI" in fig.axes[0].get_ylabel()


def test_faithfulness_figure(tmp_path):
    curve = [{"fraction": 0.0, "accuracy": 0.1}, {"fraction": 1.0, "accuracy": 0.9}]
    probe = {"n": 4, "corrupted": {"follows": 0.5, "changed": 2, "n": 4}, "filler": {"accuracy": 0.25, "correct": 1},
             "paraphrased": {"unchanged": None, "unchanged_count": 0, "n": 0}}
    fig = plots.faithfulness_figure({"base (gold)": curve, "sft (gold)": curve, "sft (own)": curve},
                                    {"base": probe, "sft": probe}, tmp_path / "f.png",
                                    controls={"sft": {"passed": False}, "base": {"passed": True}})
    left, right = fig.axes
    assert (tmp_path / "f.png").is_file() and len(left.lines) == 3 and _bars(right) == 6
    heights = [patch.get_height() for patch in right.patches]
    assert heights[:4] == [0.5, 0.5, 0.25, 0.25] and all(h != h for h in heights[4:])  # unmeasured: nan, not 0
    assert [t.get_text() for t in right.texts] == ["not measured", "not measured"]
    assert [t.get_text() for t in right.get_xticklabels()] == ["base", "sft (control failed)"]


def _error_spans(container) -> list[tuple[float, float]]:
    """(low, high) of each vertical error bar an ErrorbarContainer drew, rounded to 3 places."""
    return [tuple(seg[:, 1].round(3)) for seg in container.lines[2][-1].get_segments()]  # yerr is drawn after xerr


def _bar_errors(ax) -> list[tuple[float, float]]:
    """_error_spans of the first bar chart's error bars on `ax`."""
    from matplotlib.container import ErrorbarContainer

    return _error_spans(next(c for c in ax.containers if isinstance(c, ErrorbarContainer)))


def test_accuracy_and_length_draws_wilson_intervals_from_counts(tmp_path):
    fig = plots.accuracy_and_length(["direct", "cot"], [0.0, 0.5], [(0, 10), (5, 10)], [12, 40], "t", tmp_path / "a.png")
    left = fig.axes[0]
    # Wilson 0/10 is 0-28%: a bar with width where ±1 standard error has none
    assert (tmp_path / "a.png").is_file() and _bar_errors(left) == [(0.0, 0.278), (0.237, 0.763)]
    assert "95% Wilson intervals" in left.get_ylabel()


def test_accuracy_and_length_takes_error_bars_and_refuses_to_call_standard_errors_wilson():
    from cotlab.evidence import error_bars

    given = plots.accuracy_and_length(["a", "b"], [0.0, 1.0], error_bars([(0, 4), (4, 4)]), [1, 2], "t").axes[0]
    assert _bar_errors(given) == [(0.0, 0.49), (0.51, 1.0)] and "Wilson" in given.get_ylabel()
    with pytest.warns(UserWarning, match="counts for Wilson"):
        old = plots.accuracy_and_length(["a", "b"], [0.0, 0.5], [0.0, 0.158], [1, 2], "t").axes[0]
    assert "standard error, not Wilson" in old.get_ylabel()


def test_scaling_figure_bars_each_mean_with_its_wilson_interval(tmp_path):
    curve = [{"k": 1, "pass": 0.0, "maj": 0.0, "tokens": 10, "n": 10}, {"k": 4, "pass": 0.6, "maj": 0.3, "tokens": 40, "n": 10}]
    fig = plots.scaling_figure({"base": curve, "sft": curve}, tmp_path / "s.png")
    left, right = fig.axes
    assert (tmp_path / "s.png").is_file() and len(left.containers) == 4 and len(right.containers) == 2
    assert _error_spans(left.containers[0])[0] == (0.0, 0.278)  # pass@1 = 0 of 10: Wilson, not a zero-width bar
    assert "95% Wilson intervals" in left.get_ylabel() and "95% Wilson intervals" in right.get_ylabel()
    assert "(n=10)" in left.get_legend().get_texts()[0].get_text()


def test_update_sizes(tmp_path):
    by_layer = {"sft": {0: 0.1, 1: 0.2}, "grpo": {0: 0.01, 1: 0.02}}
    by_module = {"sft": {"q_proj": 0.1, "v_proj": 0.2}, "grpo": {"q_proj": 0.01}}
    fig = plots.update_sizes(by_layer, by_module, tmp_path / "u.png")
    left, right = fig.axes
    assert (tmp_path / "u.png").is_file() and len(left.lines) == 2 and _bars(right) == 4


def test_gain_vs_forgetting(tmp_path):
    scored = [{"label": "base", "mean": {"chain_sum": -3.0, "syllogism": -1.0, "leg_counting": -2.0}},
              {"label": "step 10", "mean": {"chain_sum": -1.0, "syllogism": -1.5, "leg_counting": -2.1}}]
    fig = plots.gain_vs_forgetting(scored, "chain_sum", ["syllogism", "leg_counting"], tmp_path / "g.png")
    ax = fig.axes[0]
    assert (tmp_path / "g.png").is_file() and len(ax.lines) == 2 and len(ax.texts) == 4
    assert list(ax.lines[0].get_xdata()) == [-3.0, -1.0] and list(ax.lines[0].get_ydata()) == [-1.0, -1.5]
    assert "interval" not in ax.get_title()  # no per-question scores: no bars, and no caption for them


def test_gain_vs_forgetting_bars_are_t_intervals_over_the_questions():
    from cotlab.stats import across_seeds

    scores = {"chain_sum": [-3.5, -2.5], "syllogism": [-1.2, -0.8]}
    scored = [{"label": "base", "mean": {"chain_sum": -3.0, "syllogism": -1.0}, "scores": scores}]
    ax = plots.gain_vs_forgetting(scored, "chain_sum", ["syllogism"]).axes[0]
    low, high = across_seeds(scores["syllogism"])["interval"]
    assert _error_spans(ax.containers[0])[0] == (round(low, 3), round(high, 3))
    assert "95% t intervals over the questions" in ax.get_title()


def test_update_sizes_says_there_is_no_interval():
    fig = plots.update_sizes({"sft": {0: 0.1}}, {"sft": {"q_proj": 0.1}})
    assert all("one run each: no interval" in ax.get_title() for ax in fig.axes)


def test_training_curves_one_panel_per_logged_key_one_line_per_run(tmp_path):
    sft = [{"step": 1, "loss": 2.0, "entropy": 1.0}, {"step": 2, "loss": 1.5, "entropy": 0.9}]
    onpolicy = [{"step": 1, "loss": 0.8, "entropy": 1.2, "completions/mean_length": 40}, {"step": 2, "loss": 0.6}]
    fig = plots.training_curves({"A": sft, "B": onpolicy}, {"loss": "loss", "entropy": "entropy", "completions/mean_length": "length",
                                                            "grad_norm": "never logged"}, "t", tmp_path / "c.png")
    assert (tmp_path / "c.png").is_file() and [ax.get_title() for ax in fig.axes] == ["loss", "entropy", "length"]
    assert len(fig.axes[0].lines) == 2 and len(fig.axes[2].lines) == 1
    assert list(fig.axes[1].lines[1].get_ydata()) == [1.2]
