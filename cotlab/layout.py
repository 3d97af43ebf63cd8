"""Where everything lives inside a run directory, declared once.

Notebooks, the runner and the report ask a `Run` for "this run's SFT adapter" or "the DPO
evaluation" and never build paths by hand, so renaming a lesson's folder is a one-line change
here.  A run directory holds one folder per lesson, `results/LESSON.json` (each lesson's headline
numbers), the figures, the executed notebooks, `run.json` and `summary.json`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from cotlab import CotlabError
from cotlab.io import atomic_write_json

REPO_ROOT = Path(__file__).resolve().parent.parent

# lesson -> its folder in a run directory
LESSONS = {
    "baselines": "00_baselines",
    "distillation": "01_distillation",
    "sft": "02_sft",
    "dpo": "03_dpo",
    "grpo": "04_grpo",
    "faithfulness": "05_length_and_faithfulness",
    "scaling": "06_test_time_scaling",
    "changes": "07_what_training_changed",
    "rl_expansion": "08_does_rl_expand",
    "objectives": "09_grpo_objectives",
    "chain_forms": "10_what_in_a_chain_teaches",
    "onpolicy": "11_on_policy_distillation",
}
# trained stage -> (lesson, training folder inside it); its adapter is that folder's final/.
# sft_answer_only is the control of the SFT lesson: the same rows with the chain removed.
TRAINING = {"sft": ("sft", "main"), "sft_answer_only": ("sft", "answer_only"), "dpo": ("dpo", "train"),
            "grpo": ("grpo", "train")}
# stage -> (lesson, evaluation folder) of its held-out evaluation; base is scored in the SFT lesson
EVALUATIONS = {"base": ("sft", "eval_base"), "sft": ("sft", "eval_sft"),
               "sft_answer_only": ("sft", "eval_sft_answer_only"), "dpo": ("dpo", "eval_dpo"),
               "grpo": ("grpo", "eval_grpo")}
# the same stages scored out of distribution (a harder variant of the task that no stage trains on)
OOD_EVALUATIONS = {stage: (lesson, folder.replace("eval_", "ood_")) for stage, (lesson, folder) in EVALUATIONS.items()}
# the training pipeline, in order (what the analysis lessons walk); the answer-only control is not a step of it
STAGE_ORDER = ("base", "sft", "dpo", "grpo")
# every evaluated stage, in the order tables list them: each control beside what it controls
REPORT_STAGES = ("base", "sft_answer_only", "sft", "dpo", "grpo")
RESULTS = "results"


def default_run_dir() -> Path:
    """Where a notebook opened by hand (no run_dir) writes: $COTLAB_RUN_DIR, else runs/lab at the
    repository root, or under the current folder for an installed package; never inside notebooks/."""
    if os.environ.get("COTLAB_RUN_DIR"):
        return Path(os.environ["COTLAB_RUN_DIR"])
    root = REPO_ROOT if (REPO_ROOT / "pyproject.toml").is_file() else Path.cwd()
    return root / "runs" / "lab"


class Run:
    """A run directory and the names of what its lessons leave in it."""

    def __init__(self, root: str | Path | None = None):
        self.root = Path(root) if root not in (None, "") else default_run_dir()
        self.root.mkdir(parents=True, exist_ok=True)

    def __repr__(self) -> str:
        return f"Run({str(self.root)!r})"

    def folder(self, lesson: str) -> Path:
        return self.root / LESSONS[lesson]

    def figure(self, name: str) -> Path:
        """A figure file at the top of the run directory (the report and a reader find them there)."""
        return self.root / name

    def dataset(self, name: str) -> Path:
        """A training set built by the distillation lesson (a `datasets` folder)."""
        return self.folder("distillation") / name

    def training_dir(self, stage: str, name: str | None = None) -> Path:
        """A training run's output_dir: the stage's main run, or a named comparison run."""
        lesson, main = TRAINING[stage]
        return self.folder(lesson) / (name or main)

    def adapter(self, stage: str, name: str | None = None) -> str | None:
        """The adapter a finished training run left behind, or None."""
        final = self.training_dir(stage, name) / "final"
        return str(final) if (final / "adapter_config.json").is_file() else None

    def training_metrics(self, stage: str, name: str | None = None) -> dict | None:
        path = self.training_dir(stage, name) / "metrics.json"
        return json.loads(path.read_text()) if path.is_file() else None

    def evaluation_dir(self, stage: str, ood: bool = False) -> Path:
        """Where the stage's held-out evaluation lives; with ood, its out-of-distribution one."""
        lesson, folder = (OOD_EVALUATIONS if ood else EVALUATIONS)[stage]
        return self.folder(lesson) / folder

    def evaluation(self, stage: str, ood: bool = False):
        """The stage's held-out (or out-of-distribution) evaluation (cotlab.evaluate.EvalResult), or None."""
        from cotlab.evaluate import load_eval

        return load_eval(self.evaluation_dir(stage, ood))

    def trained_stages(self) -> dict[str, dict]:
        """The stages this run has finished: {stage: {"eval": EvalResult, "adapter": path or None}},
        in training order; what the analysis lessons read.  An evaluation is paired with an adapter
        only when it scored the weights the adapter (and the chain under it) holds now."""
        from cotlab.models import weights_digest

        found = {}
        for stage in STAGE_ORDER:
            result = self.evaluation(stage)
            adapter = self.adapter(stage) if stage in TRAINING else None
            if result is None or (stage in TRAINING and not adapter):
                continue
            if adapter and result.summary.get("weights") != weights_digest(adapter):
                print(f"{stage}: {self.evaluation_dir(stage)} scored other weights than {adapter} holds now "
                      "(retrained since, or trained on a retrained stage): left out until it is evaluated again")
                continue
            found[stage] = {"eval": result, "adapter": adapter}
        return found

    def save_results(self, lesson: str, result: dict) -> Path:
        """Record one lesson's headline numbers (accuracy, lengths, timings) for the run summary."""
        if lesson not in LESSONS:
            raise KeyError(f"unknown lesson '{lesson}'")
        return atomic_write_json(self.root / RESULTS / f"{lesson}.json", {"lesson": lesson, **result})

    def results(self, lesson: str | None = None) -> dict:
        """One lesson's results ({} when absent), or with no lesson all of them by lesson."""
        folder = self.root / RESULTS
        if lesson is not None:
            path = folder / f"{lesson}.json"
            return json.loads(path.read_text()) if path.is_file() else {}
        return {p.stem: json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))} if folder.is_dir() else {}


def stage_adapter(run_dir: str | Path, stage: str) -> str:
    """The adapter a run's stage left behind, or a one-line error naming what is missing."""
    if not Path(run_dir).is_dir():
        raise CotlabError(f"{run_dir} is not a run directory")
    adapter = Run(run_dir).adapter(stage)
    if adapter is None:
        raise CotlabError(f"{run_dir} has no finished {stage} adapter ({Run(run_dir).training_dir(stage)}/final)")
    return adapter
