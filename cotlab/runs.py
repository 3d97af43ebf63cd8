"""Run directories and papermill orchestration.

A run directory holds everything one execution of the suite produced: the executed notebooks,
their figures, each stage's artefacts and results, `run.json` (profile, parameters, seed,
library versions, git commit) and a run-level `summary.json`.  A new run never reuses another
run's folder; `resume_run` continues an interrupted one, skipping finished notebooks, and
`start_run` with the same `out`, profile and parameters does the same (a requeued job resumes).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import yaml

from cotlab import CotlabError, __version__
from cotlab.evidence import run_evidence
from cotlab.io import atomic_write_json
from cotlab.layout import REPO_ROOT, Run


def shipped(folder: str) -> Path:
    """A folder of the checkout (notebooks, configs) when running from one; in an installed
    package the copy shipped inside it (pyproject maps cotlab/notebooks and cotlab/configs onto
    the same folders), so `cotlab run` works from any directory."""
    if (REPO_ROOT / "pyproject.toml").is_file() and (REPO_ROOT / folder).is_dir():
        return REPO_ROOT / folder
    return Path(__file__).resolve().parent / folder


NOTEBOOK_DIR = shipped("notebooks")
PROFILE_DIR = shipped("configs") / "profiles"


# Profiles ---------------------------------------------------------------------------------------


def profiles() -> list[str]:
    return sorted(p.stem for p in PROFILE_DIR.glob("*.yaml"))


def load_profile(name: str) -> dict:
    path = PROFILE_DIR / f"{name}.yaml"
    if not path.is_file():
        raise CotlabError(f"unknown profile '{name}': choose one of {', '.join(profiles())}")
    profile = yaml.safe_load(path.read_text()) or {}
    profile.setdefault("common", {})
    profile.setdefault("notebooks", {})
    check_profile(name, profile, notebooks())
    return profile


def check_profile(name: str, profile: dict, found: list[Path]) -> None:
    """Every name a profile sets must reach a notebook: a misspelt key (`dpo_step:`) would
    otherwise be dropped in silence and the run would use the notebook's default.  A key of a
    notebook's own block must be one that notebook declares; a `common` key need only be declared
    by some notebook of the suite (not every notebook takes every common key, and `--only` picks
    a few of them)."""
    declared = {nb.stem: set(notebook_parameters(nb)) for nb in found}
    for stem, block in profile["notebooks"].items():
        if stem not in declared:
            raise CotlabError(f"profile {name}: no notebook is named '{stem}' (have {', '.join(declared)})")
        unknown = sorted(set(block or {}) - declared[stem])
        if unknown:
            raise CotlabError(f"profile {name}: notebook {stem} declares no parameter {', '.join(unknown)}")
        for key, value in (block or {}).items():
            check_recipe_block(f"profile {name}: {stem}", key, value)
    everywhere = set().union(*declared.values())
    unknown = sorted(set(profile["common"]) - everywhere)
    if unknown:
        raise CotlabError(f"profile {name}: common parameter(s) {', '.join(unknown)} declared by no notebook")


def notebooks(only: list[str] | None = None) -> list[Path]:
    """The numbered notebooks in order; `only` picks some by number or name prefix ('00', '02_sft')."""
    found = sorted(NOTEBOOK_DIR.glob("[0-9][0-9]_*.ipynb"))
    if not only:
        return found
    chosen = []
    for key in only:
        matches = [nb for nb in found if nb.stem.startswith(key)]
        if not matches:
            raise CotlabError(f"no notebook matches '{key}': have {', '.join(nb.stem for nb in found)}")
        chosen.extend(m for m in matches if m not in chosen)
    return sorted(chosen)


# A notebook parameter with one of these names is a recipe dict: its keys are the fields of that
# stage's recipe class (TRL's config plus cotlab's few fields, cotlab.recipes), handed to it unchanged.
RECIPE_PARAMETERS = {"sft": "sft", "dpo": "dpo", "grpo": "grpo", "onpolicy": "onpolicy"}


def check_recipe_block(where: str, key: str, value) -> None:
    """A profile's or -p's recipe dict names only fields its recipe class has: a misspelt field
    (`max_step`) fails before any notebook starts, with the closest valid name."""
    stage = RECIPE_PARAMETERS.get(key)
    if stage is None:
        return
    if not isinstance(value, dict):
        raise CotlabError(f"{where}: {key} is a {stage} recipe (a mapping of its fields), not {type(value).__name__}")
    from cotlab.recipes import check_fields

    check_fields(stage, value, where=f"{where}: ")


def parse_overrides(pairs: list[str] | None) -> dict:
    """`-p key=value` pairs; values are read as YAML, so numbers, booleans and lists work.
    `-p sft.max_steps=5` sets one field of a recipe dict parameter (see merge_parameters)."""
    overrides = {}
    for pair in pairs or []:
        key, eq, value = pair.partition("=")
        if not eq or not key:
            raise CotlabError(f"bad parameter '{pair}': expected key=value")
        try:
            overrides[key.strip()] = yaml.safe_load(value)
        except yaml.YAMLError:
            raise CotlabError(f"bad parameter '{pair}': its value is not valid YAML (quote a string with spaces or colons)") from None
    return overrides


def notebook_parameters(notebook: Path) -> dict:
    """Names and default source of the notebook's `parameters` cell.  Read with `ast` rather
    than papermill.inspect_notebook, which skips any line with two '=' (such as a task spec
    `rg:chain_sum?min_terms=3`) and would silently drop that parameter."""
    import ast

    import nbformat

    cells = nbformat.read(str(notebook), as_version=4).cells
    cell = next((c for c in cells if "parameters" in c.get("metadata", {}).get("tags", [])), None)
    if cell is None:
        return {}
    tree = ast.parse(cell.source)
    return {node.targets[0].id: ast.get_source_segment(cell.source, node.value)
            for node in tree.body if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name)}


def plan_parameters(profile: dict, selected: list[Path], overrides: dict) -> dict[str, dict]:
    """Parameters for each notebook: profile common < profile per-notebook < -p overrides,
    keeping only the names each notebook declares.  An override no notebook declares is an
    error, raised before any work starts (a profile's own keys were checked by load_profile)."""
    check_overrides(overrides)
    plan, declared = {}, set()
    for nb in selected:
        defaults = notebook_parameters(nb)
        declared |= set(defaults)
        merged = merge_parameters(defaults, profile["common"], profile["notebooks"].get(nb.stem) or {}, overrides)
        plan[nb.stem] = {k: v for k, v in merged.items() if k in defaults}
    unknown = sorted({key.partition(".")[0] for key in overrides} - declared)
    if unknown:
        raise CotlabError(f"unknown parameter(s) {', '.join(unknown)}: no selected notebook declares them")
    return plan


def check_overrides(overrides: dict) -> None:
    """`-p sft.max_steps=5` names a field of a recipe dict parameter; `-p sft={...}` a whole one."""
    for key, value in overrides.items():
        name, dot, field_name = key.partition(".")
        if dot and name not in RECIPE_PARAMETERS:
            raise CotlabError(f"bad parameter '{key}': only a recipe parameter ({', '.join(RECIPE_PARAMETERS)}) has fields")
        check_recipe_block(f"-p {key}", name, {field_name: value} if dot else value)


def merge_parameters(defaults: dict, *layers: dict) -> dict:
    """Later layers win.  A recipe dict parameter (RECIPE_PARAMETERS) merges field by field onto
    the notebook's own default dict, so a profile states only the fields it changes and the
    notebook gets the whole recipe; `sft.max_steps` (from -p or --sweep) sets one field."""
    import ast

    merged: dict = {}
    for layer in layers:
        for key, value in layer.items():
            name, dot, field_name = key.partition(".")
            if name in RECIPE_PARAMETERS and name in defaults:
                base = merged.get(name)
                if base is None:
                    base = dict(ast.literal_eval(defaults[name]))
                merged[name] = {**base, **({field_name: value} if dot else value)}
            else:
                merged[key] = value
    return merged


# Provenance -------------------------------------------------------------------------------------


def git_commit() -> str | None:
    if not (REPO_ROOT / ".git").exists():
        return None  # an installed copy: whatever repository site-packages sits in is not ours
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=10)
        dirty = subprocess.run(["git", "status", "--porcelain"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=10)
        return out.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "") if out.returncode == 0 else None
    except (OSError, subprocess.TimeoutExpired):
        return None


def environment_info() -> dict:
    import importlib.metadata as md

    versions = {}
    for package in ("torch", "transformers", "peft", "trl", "datasets", "accelerate", "reasoning-gym", "vllm", "torchao"):
        try:
            versions[package] = md.version(package)
        except md.PackageNotFoundError:
            pass
    info = {"cotlab": __version__, "python": platform.python_version(), "versions": versions, "git_commit": git_commit()}
    try:
        import torch

        from cotlab.models import decoding_dtype, dtype_name, resolve_dtype

        info["device"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else f"cpu ({platform.processor() or platform.machine()})"
        info["dtype_auto"] = dtype_name(resolve_dtype("auto"))  # what `dtype: auto` picks on this machine (training)
        info["decoding_dtype_auto"] = dtype_name(decoding_dtype("auto"))  # and for decoding (int8 where measured faster)
    except ImportError:
        pass
    return info


# Run directories --------------------------------------------------------------------------------


def new_run_dir(out: str | Path | None, profile: str, root: str | Path = "runs") -> Path:
    """A fresh folder: `out` if given and empty or absent, else runs/<timestamp>-<profile>."""
    if out is not None:
        path = Path(out)
        if path.exists() and any(path.iterdir()):
            raise CotlabError(f"{path} already exists and is not empty: a run never overwrites another (use --resume to continue it)")
        path.mkdir(parents=True, exist_ok=True)
        return path.resolve()
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    for attempt in range(100):
        path = Path(root) / (f"{stamp}-{profile}" + (f"-{attempt}" if attempt else ""))
        try:
            path.mkdir(parents=True)
            return path.resolve()
        except FileExistsError:
            continue
    raise CotlabError(f"could not create a fresh run directory under {root}")


def same_run(out: str | Path | None, profile: str, selected: list[Path], plan: dict) -> bool:
    """Whether `out` already holds a run of this profile, notebooks and parameters: then
    `cotlab run --out DIR` continues it, so a requeued batch job picks up where it was killed.
    A run of anything else there is refused, never overwritten."""
    run_file = Path(out) / "run.json" if out is not None else None
    if run_file is None or not run_file.is_file():
        return False
    run = json.loads(run_file.read_text())
    wanted = {"profile": profile, "selected": [nb.stem for nb in selected], "plan": plan}
    differs = [key for key, value in wanted.items() if run.get(key) != json.loads(json.dumps(value))]
    if differs:
        raise CotlabError(f"{out} holds a run with another {' and '.join(differs)} (profile {run.get('profile')}): "
                          "choose another --out; a run never overwrites another")
    return True


def require_cuda(profile_name: str, profile: dict) -> None:
    """A GPU profile on a machine without CUDA would spend hours on the CPU (a batch job on a
    login node, or CPU torch on a GPU node): stop at once unless COTLAB_ALLOW_CPU=1 says so."""
    if not profile.get("requires_cuda", profile_name == "gpu") or os.environ.get("COTLAB_ALLOW_CPU") == "1":
        return
    import torch

    if not torch.cuda.is_available():
        build = f"CUDA {torch.version.cuda} build, no GPU visible" if torch.version.cuda else "CPU-only build"
        raise CotlabError(f"profile {profile_name} needs a CUDA GPU, and torch {torch.__version__} ({build}) has none: run it "
                          "on a GPU node (COTLAB_TORCH=cuda bash scripts/setup.sh), or set COTLAB_ALLOW_CPU=1 to run on the CPU")


def summarize_run(run_dir: Path) -> dict:
    """The run-level summary that scripts read by name: `seed` (training and sampling) and
    `data_seed` (which questions), each lesson's status and results, and, computed from the
    evaluations on disk (cotlab.evidence.run_evidence), per-stage `accuracy` with its Wilson 95%
    `interval`, `n_eval`, `eval_set`, the exact McNemar `paired` tests, and all of these again
    out of distribution (`accuracy_ood`, `interval_ood`, `n_eval_ood`, `eval_set_ood`, `paired_ood`)."""
    run = json.loads((run_dir / "run.json").read_text())
    data_seeds = [plan["data_seed"] for plan in run.get("plan", {}).values() if "data_seed" in plan]
    summary = {
        "profile": run["profile"],
        "seed": run.get("seed"),
        "data_seed": data_seeds[0] if data_seeds else None,
        **run_evidence(run_dir),
        "notebooks": run.get("notebooks", {}),
        "run_dir": str(run_dir),
        "stages": Run(run_dir).results(),
    }
    summary["wall_seconds"] = round(sum(nb.get("wall_seconds", 0) for nb in summary["notebooks"].values()), 1)
    return summary


@contextlib.contextmanager
def papermill_progress():
    """How papermill reports a notebook's progress.  At a terminal: a bar over its cells.  In a
    batch job's log (stdout not a terminal): each cell's start and end with the time, and the
    cell's own output (training logs, timings) as it comes, so a log is never silent for hours."""
    # We validate parameters ourselves (plan_parameters); papermill's own inspector misreads
    # values containing '=' and would warn about every task spec.
    for name in ("papermill.translators", "papermill.parameterize"):
        logging.getLogger(name).setLevel(logging.ERROR)
    logger = logging.getLogger("papermill")
    if sys.stdout.isatty():
        logger.setLevel(logging.ERROR)
        yield {"progress_bar": True, "log_output": False}
        return
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%H:%M:%S"))
    handler.addFilter(lambda record: not record.getMessage().startswith("Passed unknown parameter"))
    logger.setLevel(logging.INFO)
    logger.addHandler(handler)
    logger.propagate = False
    os.environ["COTLAB_TEXT_PROGRESS"] = "1"  # the kernels inherit it: training draws text bars (cotlab.training)
    try:
        yield {"progress_bar": False, "log_output": True}
    finally:
        logger.removeHandler(handler)
        os.environ.pop("COTLAB_TEXT_PROGRESS", None)


PROJECT_KERNEL = "cotlab"  # what scripts/setup.sh registers inside its environment (--sys-prefix)


def project_kernel() -> str:
    """The Jupyter kernel papermill runs the lessons in: the project's own (`cotlab`, which set-up
    registers inside the environment) when it starts this very Python, else `python3`.  Jupyter
    looks in the user's folder before the environment's, where a `cotlab` kernel of another
    checkout would start another environment's Python; so the environment's kernel folder is put
    first on JUPYTER_PATH for this process and the kernels it starts."""
    folder = Path(sys.prefix) / "share" / "jupyter"
    spec = folder / "kernels" / PROJECT_KERNEL / "kernel.json"
    try:
        argv = json.loads(spec.read_text())["argv"]
    except (OSError, ValueError, KeyError):
        return "python3"
    if not argv or os.path.abspath(argv[0]) != os.path.abspath(sys.executable):
        return "python3"
    paths = os.environ.get("JUPYTER_PATH", "").split(os.pathsep)
    if str(folder) not in paths:
        os.environ["JUPYTER_PATH"] = os.pathsep.join([str(folder), *filter(None, paths)])
    return PROJECT_KERNEL


def first_line(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    return lines[0] if lines else "(no message)"


def record_notebook(run_dir: Path, run: dict, stem: str, state: str, start: float, error: str | None = None) -> float:
    """Write a notebook's end state (done, failed with its reason, interrupted) to run.json and
    refresh summary.json, so no run is left saying "running" after its runner stopped."""
    wall = round(time.perf_counter() - start, 1)
    run["notebooks"][stem] = {**run["notebooks"][stem], "status": state, "wall_seconds": wall, **({"error": error} if error else {})}
    atomic_write_json(run_dir / "run.json", run)
    atomic_write_json(run_dir / "summary.json", summarize_run(run_dir))
    return wall


def execute_suite(run_dir: Path, plan: dict[str, dict], selected: list[Path], log=print) -> dict:
    """Run the selected notebooks in order with papermill, recording progress after each one."""
    import papermill

    run_file = run_dir / "run.json"
    run = json.loads(run_file.read_text())
    kernel = project_kernel()
    run.setdefault("environment", {})["kernel"] = kernel
    for nb in selected:
        status = run["notebooks"].get(nb.stem, {})
        if status.get("status") == "done":
            log(f"  {nb.stem}: done earlier, skipped")
            continue
        parameters = {**plan[nb.stem]}
        if "run_dir" in notebook_parameters(nb):
            parameters["run_dir"] = str(run_dir)
        log(f"  {nb.stem}: running ({', '.join(f'{k}={v}' for k, v in parameters.items() if k != 'run_dir')})")
        start = time.perf_counter()
        run["notebooks"][nb.stem] = {"status": "running", "parameters": parameters}
        atomic_write_json(run_file, run)
        error = None
        try:
            with papermill_progress() as progress:
                papermill.execute_notebook(str(nb), str(run_dir / nb.name), parameters=parameters, cwd=str(run_dir),
                                           kernel_name=kernel, **progress)
        except papermill.PapermillExecutionError as e:  # a cell raised: its exception, not papermill's wrapper
            error = f"{e.ename}: {str(e.evalue).splitlines()[0] if e.evalue else ''}"
        except KeyboardInterrupt:
            record_notebook(run_dir, run, nb.stem, "interrupted", start)
            raise
        except Exception as e:  # the kernel died (killed for memory), would not start, or papermill failed
            error = f"{type(e).__name__}: {first_line(e)}"
        wall = record_notebook(run_dir, run, nb.stem, "failed" if error else "done", start, error)
        if error:
            raise CotlabError(f"notebook {nb.stem} failed after {wall}s: {error} (see {run_dir / nb.name})")
        log(f"  {nb.stem}: done in {wall}s")
    summary = summarize_run(run_dir)
    atomic_write_json(run_dir / "summary.json", summary)
    return summary


def start_run(profile_name: str, out=None, only=None, overrides=None, root="runs", log=print) -> tuple[Path, dict]:
    """Validate everything, make a fresh run directory (or continue the same run already in
    `out`), then run the suite."""
    profile = load_profile(profile_name)
    selected = notebooks(only)
    if not selected:
        raise CotlabError(f"no notebooks found in {NOTEBOOK_DIR}")
    overrides = overrides or {}
    plan = plan_parameters(profile, selected, overrides)
    require_cuda(profile_name, profile)
    if same_run(out, profile_name, selected, plan):
        return resume_run(out, log)
    run_dir = new_run_dir(out, profile_name, root)
    run = {
        "profile": profile_name,
        "started": dt.datetime.now().isoformat(timespec="seconds"),
        "seed": {**profile["common"], **overrides}.get("seed"),
        "overrides": overrides,
        "selected": [nb.stem for nb in selected],
        "plan": plan,
        "notebooks_from": str(NOTEBOOK_DIR),
        "environment": environment_info(),
        "notebooks": {},
    }
    atomic_write_json(run_dir / "run.json", run)
    log(f"cotlab run: profile {profile_name} -> {run_dir}")
    return run_dir, execute_suite(run_dir, plan, selected, log)


def resume_run(run_dir: str | Path, log=print) -> tuple[Path, dict]:
    """Continue an interrupted run with its recorded plan: finished notebooks are skipped, and a
    stage that left checkpoints or partial generations picks them up (each stage resumes itself)."""
    run_dir = Path(run_dir).resolve()
    run_file = run_dir / "run.json"
    if not run_file.is_file():
        raise CotlabError(f"{run_dir} is not a cotlab run directory (no run.json)")
    run = json.loads(run_file.read_text())
    require_cuda(run["profile"], load_profile(run["profile"]))
    selected = notebooks(run["selected"])
    log(f"cotlab run: resuming {run_dir} (profile {run['profile']})")
    return run_dir, execute_suite(run_dir, run["plan"], selected, log)
