"""Sweeps: one run of the suite per point of a parameter grid, in sibling run directories of one
sweep folder, then a report comparing them.  Sits above runs (which executes one run) and report
(which reads finished runs)."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import yaml

from cotlab import CotlabError
from cotlab.report import build_report
from cotlab.runs import load_profile, new_run_dir, notebooks, plan_parameters, start_run


def parse_sweep(specs: list[str] | None) -> dict[str, list]:
    """`--sweep key=v1,v2,…` (repeatable) -> {key: [values]}; values are YAML (`lora_r=4,16`,
    `temperatures=[0.5],[1.0]`)."""
    grid = {}
    for spec in specs or []:
        key, eq, values = spec.partition("=")
        if not eq or not key or not values:
            raise CotlabError(f"bad sweep '{spec}': expected key=value1,value2")
        try:
            grid[key.strip()] = yaml.safe_load(f"[{values}]")
        except yaml.YAMLError:
            raise CotlabError(f"bad sweep values in '{spec}'") from None
    return grid


def sweep_points(grid: dict[str, list]) -> list[dict]:
    """Every combination of the grid's values, in order."""
    keys = list(grid)
    return [dict(zip(keys, values)) for values in itertools.product(*(grid[k] for k in keys))]


def point_name(point: dict) -> str:
    text = "_".join(f"{k}={json.dumps(v, separators=(',', ':'))}" for k, v in point.items())
    return "".join(c if c.isalnum() or c in "=_-.,[]" else "-" for c in text)[:120]


def start_sweep(profile_name: str, sweep: dict[str, list], out=None, only=None, overrides=None, root="runs",
                log=print) -> tuple[Path, list[Path]]:
    """One run per grid point, in sibling directories of a fresh sweep folder; then a report
    comparing them.  Every point's parameters are checked before the first run starts."""
    profile = load_profile(profile_name)
    selected = notebooks(only)
    points = sweep_points(sweep)
    for point in points:
        plan_parameters(profile, selected, {**(overrides or {}), **point})
    sweep_dir = new_run_dir(out, f"{profile_name}-sweep", root)
    run_dirs = []
    for point in points:
        log(f"cotlab sweep: point {point}")
        run_dir, _ = start_run(profile_name, out=sweep_dir / point_name(point), only=only,
                               overrides={**(overrides or {}), **point}, log=log)
        run_dirs.append(run_dir)
    report = build_report(run_dirs, sweep_dir / "report")
    log(f"cotlab sweep: report {report}")
    return sweep_dir, run_dirs
