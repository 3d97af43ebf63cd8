"""`cotlab run --sweep` and `cotlab report`: sibling run directories, one table, figures that load
in a real browser (headless Chromium)."""

import json
import os
import shutil
import subprocess

import pytest

from cotlab import CotlabError
from cotlab.layout import Run
from cotlab.report import build_report, differing_parameters
from cotlab.sweeps import parse_sweep, point_name, sweep_points

from conftest import run_cli


def test_sweep_grid_parsing():
    grid = parse_sweep(["lora_r=4,16", "temperatures=[0.5],[1.0]"])
    assert grid == {"lora_r": [4, 16], "temperatures": [[0.5], [1.0]]}
    points = sweep_points(grid)
    assert len(points) == 4 and points[0] == {"lora_r": 4, "temperatures": [0.5]}
    assert point_name(points[0]) == "lora_r=4_temperatures=[0.5]"
    with pytest.raises(CotlabError, match="bad sweep"):
        parse_sweep(["lora_r"])


def chromium_loaded_images(html_file) -> tuple[int, int]:
    """Open a copy of the page in headless Chromium; return (images loaded, images on the page)."""
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        if os.environ.get("COTLAB_REQUIRE_CHROMIUM"):
            pytest.fail("chromium is not installed (.ci/run installs it)")
        pytest.skip("chromium is not installed here (.ci/run installs it for CI)")
    probe = html_file.with_name("chromium_probe.html")
    script = ("<script>window.addEventListener('load', () => { const all = [...document.images]; "
              "document.title = 'loaded ' + all.filter(i => i.complete && i.naturalWidth > 0).length + '/' + all.length; });</script>")
    probe.write_text(html_file.read_text().replace("</body>", script + "</body>"))
    profile = html_file.parent / "chromium-profile"
    result = subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                             "--disable-background-networking", "--disable-component-update", "--disable-sync",
                             f"--user-data-dir={profile}", "--virtual-time-budget=10000", "--dump-dom", probe.as_uri()],
                            capture_output=True, text=True, timeout=120)
    probe.unlink()
    shutil.rmtree(profile, ignore_errors=True)
    import re

    match = re.search(r"<title>loaded (\d+)/(\d+)</title>", result.stdout)
    assert match, f"chromium printed no result: {result.stderr[-1500:]}"
    return int(match.group(1)), int(match.group(2))


def fake_run(root, name: str, seed: int, patterns: dict[str, str], ood: dict[str, str] | None = None, **parameters):
    """A finished run directory without a model: run.json, evaluations on disk and one figure."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from test_evidence import write_stage

    folder = root / name
    run = Run(folder)
    plan = {"02_sft_lora": {"seed": seed, "data_seed": 0, "n_eval": 10, **parameters}}
    (folder / "run.json").write_text(json.dumps({"profile": "smoke", "seed": seed, "plan": plan, "overrides": {"seed": seed},
                                                 "notebooks": {"02_sft_lora": {"status": "done", "wall_seconds": 3.0}}}))
    for stage, pattern in patterns.items():
        write_stage(run, stage, pattern)
    for stage, pattern in (ood or {}).items():
        write_stage(run, stage, pattern, ood=True, prefix="o")
    fig, ax = plt.subplots(figsize=(2, 2))
    ax.plot([0, 1], [seed, 1])
    fig.savefig(folder / "02_sft_curves.png")
    plt.close(fig)
    return folder


def test_the_report_gives_intervals_paired_tests_and_only_the_parameters_that_differ(tmp_path):
    patterns = {"base": "0000000000", "sft_answer_only": "1100000000", "sft": "1111111100"}
    runs = [fake_run(tmp_path, "seed=0", 0, patterns, {"base": "0000", "sft": "1100"}),
            fake_run(tmp_path, "seed=1", 1, {**patterns, "sft": "1111111000"}, {"base": "0000", "sft": "1000"})]
    html_file = build_report(runs, tmp_path / "report")
    data = json.loads((tmp_path / "report" / "report.json").read_text())
    assert data["varied"] == ["seed"] and len(data["groups"]) == 1
    sft = data["stages"]["sft"]
    assert sft["n_runs"] == 2 and sft["mean"] == pytest.approx(0.75) and sft["interval"][0] < 0.7 < 0.8 < sft["interval"][1]
    assert data["stages"]["base"]["interval"] == [0.0, 0.0] and data["stages_ood"]["sft"]["mean"] == pytest.approx(0.375)
    between = {c["stage"]: c for c in data["between_runs"]}
    assert between["sft"]["paired"] and (between["sft"]["wins"], between["sft"]["losses"]) == (0, 1)  # same eval_set

    table = (tmp_path / "report" / "report.md").read_text()
    assert "| sft | 80 (49–94) | 70 (40–89) | 75 (" in table  # Wilson per run, t interval of the mean beside them
    # raw p and Holm's over each run's four pairs (three in distribution, one out): 4 · 0.0078, 4 · 0.016
    assert "| sft vs base | 8 / 0 (p 0.0078, Holm 0.031) | 7 / 0 (p 0.016, Holm 0.062) |" in table
    assert "| run | seed | questions (eval_set) |" in table  # seed is all that differs; nothing else is listed
    assert "sft beats base: 8 questions fixed, 0 broken, exact McNemar p = 0.0078, Holm-adjusted p = 0.031 over 4 tests" in table
    assert "sft vs base: no difference we can tell from noise (7 questions fixed" in table  # raw 0.016, Holm 0.062
    assert "Does SFT's gain carry over out of distribution? Not detected" in table and "SFT out of distribution:" not in table
    assert "sft: mean 75% over 2 runs (95% t interval of the mean" in table
    assert "(runs/seed=1/02_sft_curves.png)" in table and (tmp_path / "report" / "runs" / "seed=1" / "02_sft_curves.png").is_file()
    html_text = html_file.read_text()
    assert "<td>lora_r</td>" not in html_text and "max-width:60rem" in html_text


def test_runs_on_different_questions_are_not_paired_and_other_parameters_split_the_mean(tmp_path):
    runs = [fake_run(tmp_path, "a", 0, {"sft": "1111100000"}, lora_r=4),
            fake_run(tmp_path, "b", 0, {"sft": "11111111"}, lora_r=16)]
    data = json.loads((build_report(runs, tmp_path / "report").with_name("report.json")).read_text())
    assert data["varied"] == ["lora_r"] and "stages" not in data and "stages_ood" not in data  # no mean across ranks
    assert [g["runs"] for g in data["groups"]] == [["a"], ["b"]] and data["groups"][0]["stages"]["sft"]["interval"] is None
    assert data["between_runs"][0]["paired"] is False and "independent" not in data["between_runs"][0]["sentence"]
    assert "compared as independent samples" in (tmp_path / "report" / "report.md").read_text()


@pytest.mark.slow
def test_a_seed_sweep_scores_every_run_on_the_same_questions(tmp_path):
    """`cotlab run --only 00 02 --sweep seed=0,1`: two runs, different seeds, the same eval_set, and a
    report.json with each stage's mean, t interval and n_runs; the page loads in headless Chromium."""
    sweep = tmp_path / "sweep"
    result = run_cli("run", "--profile", "smoke", "--only", "00", "02", "--out", str(sweep), "--sweep", "seed=0,1",
                     "-p", "sweep_steps=0", timeout=900)  # no short comparison runs: the main run and its control
    assert result.returncode == 0, result.stderr[-2000:]
    runs = sorted(p for p in sweep.iterdir() if (p / "run.json").is_file())
    assert [p.name for p in runs] == ["seed=0", "seed=1"]
    summaries = [json.loads((p / "summary.json").read_text()) for p in runs]
    assert [s["seed"] for s in summaries] == [0, 1] and [s["data_seed"] for s in summaries] == [0, 0]
    assert summaries[0]["eval_set"] == summaries[1]["eval_set"] and summaries[0]["eval_set_ood"] == summaries[1]["eval_set_ood"]
    for summary in summaries:
        assert set(summary["accuracy"]) == set(summary["accuracy_ood"]) == {"base", "sft", "sft_answer_only"}
        assert summary["n_eval"] == 4 and summary["n_eval_ood"] == 4
        assert all(low <= summary["accuracy"][s] <= high for s, (low, high) in summary["interval"].items())
        assert {"sft_vs_base", "sft_vs_sft_answer_only"} <= set(summary["paired"])
        assert set(summary["paired"]["sft_vs_base"]) >= {"wins", "losses", "p_value"}

    report = sweep / "report"
    data = json.loads((report / "report.json").read_text())
    for stage in ("base", "sft", "sft_answer_only"):
        spread = data["stages"][stage]
        assert spread["n_runs"] == 2 and len(spread["interval"]) == 2 and spread["interval"][0] <= spread["mean"] <= spread["interval"][1]
    assert all(c["paired"] for c in data["between_runs"])
    loaded, total = chromium_loaded_images(report / "report.html")
    assert total >= 3 and loaded == total  # the accuracy figure and each run's own figures

    # A second report into the same folder is refused; earlier results are never overwritten.
    again = run_cli("report", str(runs[0]), "--out", str(report))
    assert again.returncode == 2 and "is not empty" in again.stderr
    missing = run_cli("report", str(tmp_path / "nowhere"))
    assert missing.returncode == 2 and "not a cotlab run directory" in missing.stderr


def test_differing_parameters_are_what_varied():
    runs = [{"parameters": {"a": 1, "b": [1, 2]}}, {"parameters": {"a": 1, "b": [1, 3]}}, {"parameters": {"a": 1}}]
    assert differing_parameters(runs) == ["b"]
    with pytest.raises(CotlabError, match="at least one run"):
        build_report([], "x")


def test_a_recipe_field_a_sweep_varied_is_named_by_its_field():
    """`--sweep sft.lora_r=4,16` varies one field of the `sft` recipe dict: the report names that field."""
    from cotlab.report import differing_parameters, flat_parameters

    runs = [{"parameters": flat_parameters({"seed": 0, "sft": {"max_steps": 45, "lora_r": r}})} for r in (4, 16)]
    assert differing_parameters(runs) == ["sft.lora_r"]
