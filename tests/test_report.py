"""`cotlab run --sweep` and `cotlab report`: sibling run directories, one table, figures that load
in a real browser (headless Chromium)."""

import json
import os
import shutil
import subprocess

import pytest

from cotlab import CotlabError
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


def test_a_sweep_lands_in_sibling_runs_and_the_report_renders_in_chromium(tmp_path):
    sweep = tmp_path / "sweep"
    result = run_cli("run", "--profile", "smoke", "--only", "02", "--out", str(sweep), "--sweep", "lora_r=2,4", "-p", "lora_ranks=[2]",
                     "-p", "compare_sets=[]")
    assert result.returncode == 0, result.stderr[-2000:]
    runs = sorted(p for p in sweep.iterdir() if (p / "run.json").is_file())
    assert [p.name for p in runs] == ["lora_r=2", "lora_r=4"]
    assert json.loads((runs[1] / "run.json").read_text())["overrides"]["lora_r"] == 4

    report = sweep / "report"
    table = (report / "report.md").read_text()
    assert "| lora_r |" in table.splitlines()[2]  # the column for what the sweep varied
    assert "lora_r=2" in table and "lora_r=4" in table and "acc sft" in table
    loaded, total = chromium_loaded_images(report / "report.html")
    assert total == 3 and loaded == total  # accuracy, length and wall-time figures

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
