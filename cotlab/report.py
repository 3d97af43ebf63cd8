"""`cotlab report RUN_DIR…`: one table and a few figures across runs and stages, as Markdown and a
static HTML page (figures as PNG files beside it), from what each run directory recorded."""

from __future__ import annotations

import datetime as dt
import html
import json
from pathlib import Path

from cotlab import CotlabError
from cotlab.io import atomic_write_json, atomic_write_text
from cotlab.layout import STAGE_ORDER
from cotlab.runs import summarize_run

STAGES = STAGE_ORDER


def read_run(run_dir: str | Path) -> dict:
    """The facts of one run: its parameters, per-stage accuracy and length, speed and wall time."""
    folder = Path(run_dir)
    if not (folder / "run.json").is_file():
        raise CotlabError(f"{folder} is not a cotlab run directory (no run.json)")
    summary = summarize_run(folder.resolve())
    run = json.loads((folder / "run.json").read_text())
    parameters = {}
    for plan in run.get("plan", {}).values():
        parameters.update({k: v for k, v in plan.items() if k != "run_dir"})
    parameters.update(run.get("overrides", {}))
    sft = summary["stages"].get("sft", {}).get("train", {})
    return {
        "name": folder.name,
        "path": str(folder),
        "profile": summary["profile"],
        "accuracy": summary["accuracy"],
        "mean_completion_tokens": summary["mean_completion_tokens"],
        "sft_tokens_per_second": sft.get("tokens_per_second"),
        "sft_peak_memory_mb": sft.get("peak_memory_mb"),
        "wall_seconds": summary["wall_seconds"],
        "notebooks_done": sum(nb.get("status") == "done" for nb in summary["notebooks"].values()),
        "parameters": parameters,
    }


def differing_parameters(runs: list[dict]) -> list[str]:
    """Parameters whose values are not the same in every run (what a sweep varied)."""
    keys = sorted({k for run in runs for k in run["parameters"]})
    return [k for k in keys if len({json.dumps(run["parameters"].get(k), sort_keys=True) for run in runs}) > 1]


def _cell(value) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 1 else f"{value:.1f}"
    return str(value)


def table_rows(runs: list[dict]) -> tuple[list[str], list[list[str]]]:
    varied = differing_parameters(runs)
    stages = [s for s in STAGES if any(s in run["accuracy"] for run in runs)]
    header = ["run", "profile", *varied, *(f"acc {s}" for s in stages), *(f"tokens {s}" for s in stages),
              "SFT tokens/s", "SFT peak MB", "wall s"]
    rows = []
    for run in runs:
        rows.append([run["name"], run["profile"], *(_cell(run["parameters"].get(k)) for k in varied),
                     *(_cell(run["accuracy"].get(s)) for s in stages), *(_cell(run["mean_completion_tokens"].get(s)) for s in stages),
                     _cell(run["sft_tokens_per_second"]), _cell(run["sft_peak_memory_mb"]), _cell(run["wall_seconds"])])
    return header, rows


def figures(runs: list[dict], out: Path) -> list[tuple[str, str]]:
    """(file, caption) of each figure, drawn from the runs' numbers."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from cotlab.plots import grouped_bars

    made = []
    stages = [s for s in STAGES if any(s in run["accuracy"] for run in runs)]
    for key, ylabel, filename in [("accuracy", "held-out accuracy", "report_accuracy.png"),
                                  ("mean_completion_tokens", "mean completion tokens", "report_length.png")]:
        if not stages:
            break
        fig, ax = plt.subplots(figsize=(max(5, 1.2 * len(stages) * len(runs) / 2 + 3), 3.5))
        grouped_bars(ax, stages, {run["name"]: [run[key].get(s, 0.0) for s in stages] for run in runs}, ylabel)
        fig.tight_layout()
        fig.savefig(out / filename, dpi=100)
        plt.close(fig)
        made.append((filename, f"{ylabel} by stage and run"))
    fig, ax = plt.subplots(figsize=(5, 3))
    ax.barh([run["name"] for run in runs], [run["wall_seconds"] for run in runs])
    ax.set_xlabel("wall seconds (all notebooks)")
    fig.tight_layout()
    fig.savefig(out / "report_wall.png", dpi=100)
    plt.close(fig)
    made.append(("report_wall.png", "wall time per run"))
    return made


def render_markdown(header, rows, made, generated: str) -> str:
    lines = [f"# cotlab report ({generated})", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    lines += [""] + [f"![{caption}]({name})" for name, caption in made]
    return "\n".join(lines) + "\n"


def render_html(header, rows, made, generated: str) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in rows)
    figs = "".join(f'<figure><img src="{html.escape(name)}" alt="{html.escape(caption)}"><figcaption>{html.escape(caption)}'
                   "</figcaption></figure>" for name, caption in made)
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>cotlab report</title><style>"
            "body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:4px 8px}"
            f"img{{max-width:100%}}</style></head><body><h1>cotlab report</h1><p>{html.escape(generated)}</p>"
            f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>{figs}</body></html>\n")


def build_report(run_dirs: list[str | Path], out: str | Path) -> Path:
    """Write report.md, report.html and the figures into `out` (new or empty); return the HTML path."""
    if not run_dirs:
        raise CotlabError("cotlab report needs at least one run directory")
    runs = [read_run(d) for d in run_dirs]
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise CotlabError(f"{out} is not empty: choose a new folder for the report")
    out.mkdir(parents=True, exist_ok=True)
    generated = dt.datetime.now().isoformat(timespec="seconds") + f", {len(runs)} run(s)"
    header, rows = table_rows(runs)
    made = figures(runs, out)
    atomic_write_text(out / "report.md", render_markdown(header, rows, made, generated))
    atomic_write_text(out / "report.html", render_html(header, rows, made, generated))
    atomic_write_json(out / "runs.json", runs)
    return out / "report.html"
