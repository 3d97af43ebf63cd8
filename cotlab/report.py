"""`cotlab report RUN_DIR…`: what a researcher would paste into a draft, as Markdown and a static
HTML page (figures as PNG files beside it), from what each run directory recorded.

Every accuracy carries an interval and says which: a run's own accuracy its Wilson 95% interval,
a mean over runs a Student t 95% interval of that mean (stats.across_seeds).  Stages of one run
are compared question by question (exact McNemar); runs are compared question by question only
when they were scored on the same questions (the same `eval_set`), else as independent samples.
The parameter table lists only what differs between runs, so it fits the page.
"""

from __future__ import annotations

import datetime as dt
import html
import json
import shutil
from pathlib import Path

from cotlab import CotlabError
from cotlab.evidence import (across_runs, across_runs_phrase, attribution_sentence, carry_over_sentence, ordered_stages,
                             stage_rows, training_budget)
from cotlab.io import atomic_write_json, atomic_write_text
from cotlab.layout import Run
from cotlab.runs import summarize_run
from cotlab.stats import compare_paired, difference_verdict, paired_verdict

ACROSS_RUNS = "Student t 95% interval of the mean over runs (stats.across_seeds)"
WITHIN_RUN = "Wilson 95% interval"
DISTRIBUTIONS = (("", "in distribution"), ("_ood", "out of distribution"))


def read_run(run_dir: str | Path) -> dict:
    """The facts of one run: its parameters, its summary (accuracies, intervals, paired tests, on
    which questions), speed, wall time and figures."""
    folder = Path(run_dir)
    if not (folder / "run.json").is_file():
        raise CotlabError(f"{folder} is not a cotlab run directory (no run.json)")
    summary = summarize_run(folder.resolve())
    run = json.loads((folder / "run.json").read_text())
    parameters = {"profile": summary["profile"]}
    for plan in run.get("plan", {}).values():
        parameters.update(flat_parameters({k: v for k, v in plan.items() if k != "run_dir"}))
    parameters.update(flat_parameters(run.get("overrides", {})))
    sft = summary["stages"].get("sft", {}).get("train", {})
    sft_metrics = Run(folder).training_metrics("sft")
    keys = [prefix + suffix for prefix in ("accuracy", "interval", "n_eval", "eval_set", "paired", "mean_completion_tokens")
            for suffix, _ in DISTRIBUTIONS]
    return {
        "name": folder.name,
        "path": str(folder.resolve()),
        "profile": summary["profile"],
        **{key: summary.get(key) for key in ("seed", "data_seed", *keys)},
        "sft_tokens_per_second": sft.get("tokens_per_second"),
        "sft_peak_memory_mb": sft.get("peak_memory_mb"),
        "sft_budget": training_budget(sft_metrics) if sft_metrics else None,
        "wall_seconds": summary["wall_seconds"],
        "notebooks_done": sum(nb.get("status") == "done" for nb in summary["notebooks"].values()),
        "figures": sorted(p.name for p in folder.glob("*.png")),
        "parameters": parameters,
    }


def flat_parameters(parameters: dict) -> dict:
    """A recipe dict parameter as one entry per field (`sft.learning_rate`), the names -p and
    --sweep use, so a report names the field a sweep varied rather than the whole recipe."""
    from cotlab.runs import RECIPE_PARAMETERS

    flat = {}
    for key, value in parameters.items():
        if key in RECIPE_PARAMETERS and isinstance(value, dict):
            flat.update({f"{key}.{field}": field_value for field, field_value in value.items()})
        else:
            flat[key] = value
    return flat


def differing_parameters(runs: list[dict]) -> list[str]:
    """Parameters whose values are not the same in every run (what a sweep varied)."""
    keys = sorted({k for run in runs for k in run["parameters"]})
    return [k for k in keys if len({json.dumps(run["parameters"].get(k), sort_keys=True) for run in runs}) > 1]


def seed_groups(runs: list[dict]) -> list[list[dict]]:
    """Runs that differ in nothing but `seed`, grouped: a mean over seeds is taken within a group,
    never across runs that differ in anything else."""
    varied = [k for k in differing_parameters(runs) if k != "seed"]
    groups: dict[str, list[dict]] = {}
    for run in runs:
        groups.setdefault(json.dumps({k: run["parameters"].get(k) for k in varied}, sort_keys=True), []).append(run)
    return list(groups.values())


def between_runs(runs: list[dict], suffix: str = "") -> list[dict]:
    """Each later run against the first, stage by stage: question by question (exact McNemar) when
    both were scored on the same questions, else as independent samples (Newcombe)."""
    if len(runs) < 2:
        return []
    ood = suffix == "_ood"
    first, first_rows = runs[0], stage_rows(Run(runs[0]["path"]), ood)
    found = []
    for run in runs[1:]:
        rows = stage_rows(Run(run["path"]), ood)
        same = run["eval_set" + suffix] is not None and run["eval_set" + suffix] == first["eval_set" + suffix]
        for stage in ordered_stages(set(rows) & set(first_rows)):
            a, b = f"{stage} of {run['name']}", f"{stage} of {first['name']}"
            if same:
                comparison = compare_paired(rows[stage], first_rows[stage], a, b)
                found.append({"stage": stage, "a": run["name"], "b": first["name"], "paired": True,
                              **{k: comparison[k] for k in ("wins", "losses", "p_value")},
                              "sentence": paired_verdict(comparison)})
            else:
                counts = [sum(bool(r["correct"]) for r in side) for side in (rows[stage], first_rows[stage])]
                found.append({"stage": stage, "a": run["name"], "b": first["name"], "paired": False,
                              "sentence": difference_verdict(counts[0], len(rows[stage]), counts[1], len(first_rows[stage]), a, b)})
    return found


def report_data(runs: list[dict]) -> dict:
    """What report.json holds: per group of runs that differ only in seed, each stage's mean,
    interval and n_runs (`groups`); the between-run tests; and, only when every run differs in
    seed alone (a pure seed sweep: one group), the same means at the top level (`stages`,
    `stages_ood`).  Why not always: a mean over runs that differ in a swept parameter (rank,
    learning rate) averages different experiments, and its t interval would mistake the effect
    of the parameter for seed noise."""
    groups = seed_groups(runs)
    varied = [k for k in differing_parameters(runs) if k != "seed"]
    pooled = {"stages" + suffix: across_runs(runs, "accuracy" + suffix) for suffix, _ in DISTRIBUTIONS} if len(groups) == 1 else {}
    return {
        "runs": [run["name"] for run in runs],
        "varied": differing_parameters(runs),
        "interval": ACROSS_RUNS,
        **pooled,
        "groups": [{"parameters": {k: group[0]["parameters"].get(k) for k in varied}, "runs": [r["name"] for r in group],
                    **{"stages" + suffix: across_runs(group, "accuracy" + suffix) for suffix, _ in DISTRIBUTIONS}}
                   for group in groups],
        **{"between_runs" + suffix: between_runs(runs, suffix) for suffix, _ in DISTRIBUTIONS},
    }


# Tables ------------------------------------------------------------------------------------------


def _percent(value) -> str:
    return "–" if value is None else f"{100 * value:.0f}"


def _cell(value) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 1 else f"{value:.1f}"
    if isinstance(value, (list, dict)):
        return json.dumps(value)
    return str(value)


def accuracy_table(runs: list[dict], data: dict, suffix: str) -> tuple[list[str], list[list[str]]]:
    """Rows: stages.  Columns: each run's accuracy with its Wilson interval, then each group's mean
    over seeds with its t interval (percent)."""
    stages = ordered_stages({s for run in runs for s in run["accuracy" + suffix] or {}})
    groups = [g for g in data["groups"] if len(g["runs"]) > 1]
    header = ["stage", *(run["name"] for run in runs), *(f"mean of {', '.join(g['runs'])}" for g in groups)]
    rows = []
    for stage in stages:
        cells = [stage]
        for run in runs:
            accuracy, interval = (run["accuracy" + suffix] or {}).get(stage), (run["interval" + suffix] or {}).get(stage)
            cells.append(f"{_percent(accuracy)} ({_percent(interval[0])}–{_percent(interval[1])})" if interval else "–")
        for group in groups:
            spread = group["stages" + suffix].get(stage)
            interval = spread and spread["interval"]
            cells.append("–" if not spread else f"{_percent(spread['mean'])} ({_percent(interval[0])}–{_percent(interval[1])})"
                         if interval else f"{_percent(spread['mean'])} (1 run)")
        rows.append(cells)
    return header, rows


def paired_table(runs: list[dict]) -> tuple[list[str], list[list[str]]]:
    """Rows: the (A, B) comparisons.  Columns: each run's 'wins / losses (p, Holm p)' on its shared
    questions: the raw exact McNemar p and the Holm-adjusted one over that run's pairs (both
    distributions), which is what the verdicts follow; summaries written before Holm show p alone."""
    keys = []
    for suffix, _ in DISTRIBUTIONS:
        keys += [(suffix, key) for key in dict.fromkeys(k for run in runs for k in run["paired" + suffix] or {})]
    rows = []
    for suffix, key in keys:
        cells = [key.replace("_vs_", " vs ") + (" (ood)" if suffix else "")]
        for run in runs:
            test = (run["paired" + suffix] or {}).get(key)
            holm = f", Holm {test['p_holm']:.2g}" if test and "p_holm" in test else ""
            cells.append(f"{test['wins']} / {test['losses']} (p {test['p_value']:.2g}{holm})" if test else "–")
        rows.append(cells)
    return ["A vs B", *(run["name"] for run in runs)], rows


def parameter_table(runs: list[dict]) -> tuple[list[str], list[list[str]]]:
    """Only the parameters that differ between runs, one row per run, plus which questions it saw."""
    varied = differing_parameters(runs)
    header = ["run", *varied, "questions (eval_set)"]
    return header, [[run["name"], *(_cell(run["parameters"].get(k)) for k in varied),
                     f"{run['n_eval'] or '–'} ({run['eval_set'] or '–'})"] for run in runs]


def cost_table(runs: list[dict]) -> tuple[list[str], list[list[str]]]:
    header = ["run", "notebooks done", "wall s", "SFT tokens/s", "SFT peak MB", "SFT budget"]
    return header, [[run["name"], str(run["notebooks_done"]), _cell(run["wall_seconds"]), _cell(run["sft_tokens_per_second"]),
                     _cell(run["sft_peak_memory_mb"]), run["sft_budget"] or "–"] for run in runs]


# What we saw ------------------------------------------------------------------------------------


def _run_sentences(run: dict) -> list[str]:
    """A run's verdicts: its paired tests, why SFT helped, and whether it carried over."""
    lines = []
    for suffix, where in DISTRIBUTIONS:
        paired = run["paired" + suffix] or {}
        for key, test in paired.items():
            a, _, b = key.partition("_vs_")
            lines.append(f"{where}: " + paired_verdict({"a": a, "b": b, **test}))
        if "sft_vs_sft_answer_only" in paired and "sft_answer_only_vs_base" in paired:
            lines.append(f"{where}: " + attribution_sentence(paired["sft_vs_sft_answer_only"], paired["sft_answer_only_vs_base"]))
    ood_gain = (run["paired_ood"] or {}).get("sft_vs_base")
    if ood_gain:
        lines.append("Does SFT's gain carry over out of distribution? " + carry_over_sentence({"a": "sft", "b": "base", **ood_gain}))
    return lines


def what_we_saw(runs: list[dict], data: dict) -> list[tuple[str, list[str]]]:
    """(heading, sentences): the mean over seeds per group, each run's verdicts, the between-run tests."""
    sections = []
    for group in data["groups"]:
        if len(group["runs"]) > 1:
            for suffix, where in DISTRIBUTIONS:
                lines = [across_runs_phrase(stage, spread) for stage, spread in group["stages" + suffix].items()]
                if lines:
                    sections.append((f"Over seeds, {where} (runs {', '.join(group['runs'])})", lines))
    for run in runs:
        lines = _run_sentences(run)
        if lines:
            sections.append((f"Run {run['name']}", lines))
    for suffix, where in DISTRIBUTIONS:
        lines = [c["sentence"] + ("" if c["paired"] else " (different questions: compared as independent samples)")
                 for c in data["between_runs" + suffix]]
        if lines:
            sections.append((f"Between runs, {where}", lines))
    return sections


# Figures -----------------------------------------------------------------------------------------


def accuracy_figure(runs: list[dict], out: Path) -> tuple[str, str] | None:
    """Accuracy by stage and run with Wilson 95% error bars, in and out of distribution."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [(suffix, where) for suffix, where in DISTRIBUTIONS if any(run["accuracy" + suffix] for run in runs)]
    if not panels:
        return None
    fig, axes = plt.subplots(1, len(panels), figsize=(4.5 * len(panels), 3.4), squeeze=False)
    for ax, (suffix, where) in zip(axes[0], panels):
        stages = ordered_stages({s for run in runs for s in run["accuracy" + suffix] or {}})
        width = 0.8 / len(runs)
        for i, run in enumerate(runs):
            accuracy, interval = run["accuracy" + suffix] or {}, run["interval" + suffix] or {}
            xs = [j for j, s in enumerate(stages) if s in accuracy]
            values = [accuracy[stages[j]] for j in xs]
            errors = [[v - interval[stages[j]][0] for v, j in zip(values, xs)], [interval[stages[j]][1] - v for v, j in zip(values, xs)]]
            ax.bar([x + i * width for x in xs], values, width, yerr=errors, capsize=3, label=run["name"])
        ax.set_xticks([j + width * (len(runs) - 1) / 2 for j in range(len(stages))], stages, rotation=20, fontsize=8)
        ax.set_ylim(0, 1)
        ax.set_title(f"{where} (n={runs[0]['n_eval' + suffix]})", fontsize=10)
        ax.set_ylabel("accuracy")
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "report_accuracy.png", dpi=100)
    plt.close(fig)
    return "report_accuracy.png", f"accuracy by stage and run; bars: {WITHIN_RUN} of each run"


def copy_run_figures(runs: list[dict], out: Path) -> list[tuple[str, list[tuple[str, str]]]]:
    """Each run's own figures, copied beside the report so the page travels as one folder."""
    found = []
    for run in runs:
        folder = out / "runs" / run["name"]
        made = []
        for name in run["figures"]:
            folder.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(Path(run["path"]) / name, folder / name)
            made.append((f"runs/{run['name']}/{name}", name))
        if made:
            found.append((run["name"], made))
    return found


# Rendering --------------------------------------------------------------------------------------


def report_sections(runs: list[dict], data: dict) -> list[tuple[str, str, object]]:
    """(title, note, table) of each table, in reading order."""
    sections = []
    for suffix, where in DISTRIBUTIONS:
        header, rows = accuracy_table(runs, data, suffix)
        if rows:
            n = sorted({run["n_eval" + suffix] for run in runs if run["n_eval" + suffix]})
            sections.append((f"Accuracy, {where}", f"percent; in brackets each run's {WITHIN_RUN} (n={', '.join(map(str, n))} "
                             f"questions), and for a mean over runs that differ only in seed the {ACROSS_RUNS}.", (header, rows)))
    header, rows = paired_table(runs)
    if rows:
        sections.append(("Paired tests between stages", "questions A gets right and B wrong / A wrong and B right, on the same questions; "
                         "(p) the exact McNemar p-value, (Holm) the same adjusted by Holm's method over every pair of the run, "
                         "which is what the verdicts follow.", (header, rows)))
    sections.append(("Parameters that differ between runs", "every other parameter is the same in all runs (run.json has them all).",
                     parameter_table(runs)))
    sections.append(("Cost", "", cost_table(runs)))
    return sections


def render_markdown(generated: str, sections, saw, figure, run_figures) -> str:
    lines = ["# cotlab report", "", generated, ""]
    for title, note, (header, rows) in sections:
        lines += [f"## {title}", "", *([f"*{note}*", ""] if note else []), "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        lines += ["| " + " | ".join(row) + " |" for row in rows] + [""]
    lines += ["## What we saw", ""]
    for heading, sentences in saw:
        lines += [f"**{heading}**", "", *(f"- {s}" for s in sentences), ""]
    if figure:
        lines += [f"![{figure[1]}]({figure[0]})", ""]
    for name, made in run_figures:
        lines += [f"### Figures of run {name}", "", *(f"![{caption}]({path})" for path, caption in made), ""]
    return "\n".join(lines)


STYLE = ("body{font-family:sans-serif;max-width:60rem;margin:1.5em auto;padding:0 1em;font-size:14px;line-height:1.4}"
         "table{border-collapse:collapse;width:100%;margin:.5em 0 1.5em}td,th{border:1px solid #ccc;padding:3px 6px;"
         "text-align:left;overflow-wrap:anywhere}th{background:#f4f4f4}p.note{color:#555;font-size:12px;margin:.2em 0}"
         "img{max-width:100%}figure{margin:1em 0}figcaption{font-size:12px;color:#555}")


def _html_table(header, rows) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _html_figure(path: str, caption: str) -> str:
    return (f'<figure><img src="{html.escape(path)}" alt="{html.escape(caption)}">'
            f"<figcaption>{html.escape(caption)}</figcaption></figure>")


def render_html(generated: str, sections, saw, figure, run_figures) -> str:
    parts = [f"<h1>cotlab report</h1><p>{html.escape(generated)}</p>"]
    for title, note, table in sections:
        parts.append(f"<h2>{html.escape(title)}</h2>" + (f"<p class='note'>{html.escape(note)}</p>" if note else "") + _html_table(*table))
    parts.append("<h2>What we saw</h2>")
    for heading, sentences in saw:
        parts.append(f"<h3>{html.escape(heading)}</h3><ul>" + "".join(f"<li>{html.escape(s)}</li>" for s in sentences) + "</ul>")
    if figure:
        parts.append(_html_figure(*figure))
    for i, (name, made) in enumerate(run_figures):
        figs = "".join(_html_figure(path, caption) for path, caption in made)
        parts.append(f"<details{' open' if i == 0 else ''}><summary>Figures of run {html.escape(name)}</summary>{figs}</details>")
    return (f"<!doctype html><html><head><meta charset='utf-8'><meta name='viewport' content='width=device-width'>"
            f"<title>cotlab report</title><style>{STYLE}</style></head><body>{''.join(parts)}</body></html>\n")


def build_report(run_dirs: list[str | Path], out: str | Path) -> Path:
    """Write report.md, report.html, report.json (per-stage means and intervals over runs), runs.json
    and the figures into `out` (new or empty); return the HTML path."""
    if not run_dirs:
        raise CotlabError("cotlab report needs at least one run directory")
    runs = [read_run(d) for d in run_dirs]
    if len({run["name"] for run in runs}) < len(runs):
        raise CotlabError("cotlab report needs run directories with distinct names")
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise CotlabError(f"{out} is not empty: choose a new folder for the report")
    out.mkdir(parents=True, exist_ok=True)
    generated = f"{dt.datetime.now().isoformat(timespec='seconds')}, {len(runs)} run(s): {', '.join(run['name'] for run in runs)}"
    data = report_data(runs)
    sections, saw = report_sections(runs, data), what_we_saw(runs, data)
    figure, run_figures = accuracy_figure(runs, out), copy_run_figures(runs, out)
    atomic_write_text(out / "report.md", render_markdown(generated, sections, saw, figure, run_figures))
    atomic_write_text(out / "report.html", render_html(generated, sections, saw, figure, run_figures))
    atomic_write_json(out / "report.json", {"generated": generated, **data})
    atomic_write_json(out / "runs.json", runs)
    return out / "report.html"
