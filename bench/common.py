"""Shared by the bench scripts: a result JSON beside a printed table, and a child-process runner
(each configuration runs in its own process, so peak memory is its own)."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from cotlab.io import atomic_write_json
from cotlab.runs import environment_info


CHAIN_SUM = "rg:chain_sum?min_terms=3&max_terms=4&min_digits=1&max_digits=2"


def bench_parser(steps: int | None = None) -> argparse.ArgumentParser:
    """The flags every bench script shares."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="embedded")
    parser.add_argument("--data", default=CHAIN_SUM)
    if steps is not None:
        parser.add_argument("--steps", type=int, default=steps)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--out", help="result JSON (default bench/results/NAME.json)")
    return parser


def forward(args, names: list[str]) -> list[str]:
    """The parent's flags, for a child process."""
    return [item for name in names for item in ("--" + name.replace("_", "-"), str(getattr(args, name)))]


def write_result(name: str, result: dict, out: str | None) -> Path:
    path = Path(out or f"bench/results/{name}.json")
    atomic_write_json(path, {"bench": name, **result, "environment": environment_info()})
    return path


def print_table(rows: list[dict], columns: list[str]) -> None:
    widths = [max(len(c), *(len(_fmt(r.get(c))) for r in rows)) for c in columns]
    print("  ".join(c.ljust(w) for c, w in zip(columns, widths)))
    for row in rows:
        print("  ".join(_fmt(row.get(c)).ljust(w) for c, w in zip(columns, widths)))


def _fmt(value) -> str:
    return f"{value:.2f}" if isinstance(value, float) else str(value)


def run_child(script: str, args: list[str]) -> dict:
    """Run `python script args… --child` and parse the JSON line it prints last."""
    result = subprocess.run([sys.executable, script, *args, "--child"], capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"bench child failed: {result.stderr[-2000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def load_average() -> list[float]:
    """1, 5 and 15 minute load averages (`uptime`): other work on the machine slows every configuration."""
    import os

    return [round(x, 2) for x in os.getloadavg()]


def matmul_peaks(hidden: int, intermediate: int, rows: int, seconds: float = 0.5) -> dict:
    """This machine's matrix-product rate (G(FL)OP/s, best of 5 timed loops) on the model's own MLP
    shape, [rows, hidden] x [hidden, intermediate]: fp32 (MKL), bf16 (oneDNN; AMX where present) where
    the CPU has bf16, and int8 (`torch._int_mm`, int32 accumulation: VNNI/AMX-INT8), the kernel the
    int8 path runs.  A bench's `peak_fraction` is its achieved rate over the peak of its precision."""
    import time

    import torch

    from cotlab.models import cpu_supports_bf16

    a, b = torch.randn(rows, hidden), torch.randn(hidden, intermediate)
    kinds = {"float32": (a, b, torch.mm)}
    if cpu_supports_bf16():
        kinds["bfloat16"] = (a.bfloat16(), b.bfloat16(), torch.mm)
    kinds["int8"] = (torch.randint(-127, 127, (rows, hidden), dtype=torch.int8),
                     torch.randint(-127, 127, (hidden, intermediate), dtype=torch.int8), torch._int_mm)
    peaks = {}
    for name, (x, y, mm) in kinds.items():
        for _ in range(3):
            mm(x, y)
        best = 0.0
        for _ in range(5):
            calls, start = 0, time.perf_counter()
            while time.perf_counter() - start < seconds / 5:
                mm(x, y)
                calls += 1
            best = max(best, calls * 2 * rows * hidden * intermediate / (time.perf_counter() - start))
        peaks[name] = round(best / 1e9, 1)
    return {"shape": [rows, hidden, intermediate], "gflops": peaks}
