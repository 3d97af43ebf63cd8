import json
import subprocess
import sys

import pytest

from cotlab import CotlabError
from cotlab.layout import Run
from cotlab.runs import (check_profile, execute_suite, load_profile, new_run_dir, notebook_parameters, notebooks,
                         parse_overrides, plan_parameters, profiles)

from conftest import REPO, run_cli


def test_profiles_are_shipped():
    assert {"smoke", "cpu", "gpu"} <= set(profiles())
    for name in profiles():
        assert load_profile(name)["common"]["model"]


@pytest.mark.parametrize("name", ["smoke", "cpu", "gpu"])
def test_every_profile_parameter_is_declared_by_its_notebook(name):
    profile = load_profile(name)  # checks the profile: a key no notebook declares is an error
    selected = notebooks()
    plan = plan_parameters(profile, selected, {})
    assert set(profile["notebooks"]) <= {nb.stem for nb in selected}
    for nb in selected:
        for key in profile["notebooks"].get(nb.stem) or {}:
            assert key in plan[nb.stem], f"{name}.yaml sets {key} for {nb.stem}, which does not declare it"
    for key in profile["common"]:
        assert any(key in plan[nb.stem] for nb in selected), f"{name}.yaml's common {key} reaches no notebook"


@pytest.mark.parametrize("name", ["smoke", "cpu", "gpu"])
def test_the_gold_set_is_as_large_as_the_sft_run_asks(name):
    """Notebook 02 trains on notebook 01's gold set, cut to n_train rows: a gold set smaller than
    n_train would cap the training data without a word."""
    import ast

    plan = plan_parameters(load_profile(name), notebooks(["01", "02"]), {})
    n_gold = plan["01_distillation"].get("n_gold", ast.literal_eval(notebook_parameters(notebooks(["01"])[0])["n_gold"]))
    n_train = plan["02_sft_lora"].get("n_train", ast.literal_eval(notebook_parameters(notebooks(["02"])[0])["n_train"]))
    assert n_gold >= n_train


@pytest.mark.parametrize("block,message", [
    ({"notebooks": {"03_dpo": {"dpo_step": 5}}}, "profile typo: notebook 03_dpo declares no parameter dpo_step"),
    ({"notebooks": {"03_dop": {"dpo": {"max_steps": 5}}}}, "profile typo: no notebook is named '03_dop'"),
    ({"notebooks": {"03_dpo": {"dpo": {"max_step": 5}}}}, "profile typo: 03_dpo: unknown dpo recipe field 'max_step'; did you mean 'max_steps'"),
    ({"notebooks": {"03_dpo": {"dpo": 5}}}, "profile typo: 03_dpo: dpo is a dpo recipe"),
    ({"common": {"n_evals": 5}}, r"profile typo: common parameter\(s\) n_evals declared by no notebook"),
])
def test_a_profile_key_no_notebook_declares_is_an_error(block, message):
    profile = {"common": {"seed": 0}, "notebooks": {}, **block}
    with pytest.raises(CotlabError, match=message):
        check_profile("typo", profile, notebooks())


def test_overrides_are_yaml_values():
    assert parse_overrides(["n_eval=8", "styles=[a, b]", "model=tiny-random"]) == {"n_eval": 8, "styles": ["a", "b"], "model": "tiny-random"}
    with pytest.raises(CotlabError):
        parse_overrides(["oops"])
    with pytest.raises(CotlabError, match="bad parameter 'styles=\\[a': its value is not valid YAML"):
        parse_overrides(["styles=[a"])


def stopped_run(tmp_path, cell: str):
    """Run a one-notebook suite whose second cell is `cell`; return (the error raised, run.json)."""
    import nbformat

    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("x = 1", metadata={"tags": ["parameters"]}),
                                               nbformat.v4.new_code_cell(cell)])
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    path = tmp_path / "99_stops.ipynb"
    nbformat.write(notebook, str(path))
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "run.json").write_text(json.dumps({"profile": "smoke", "plan": {}, "notebooks": {}}))
    with pytest.raises(BaseException) as raised:
        execute_suite(run_dir, {path.stem: {"x": 2}}, [path], log=lambda line: None)
    return raised.value, json.loads((run_dir / "run.json").read_text())["notebooks"][path.stem]


def test_a_dead_kernel_is_a_failed_notebook_and_a_one_line_error(tmp_path):
    """A kernel killed from outside (the kernel OOM-killed) is no cell error: papermill raises
    nbclient's DeadKernelError, which must still end as a recorded failure, not a traceback."""
    error, status = stopped_run(tmp_path, "import os, signal\nos.kill(os.getpid(), signal.SIGKILL)")
    assert isinstance(error, CotlabError) and "notebook 99_stops failed" in str(error) and "\n" not in str(error)
    assert status["status"] == "failed" and status["error"].startswith("DeadKernelError") and status["parameters"] == {"x": 2}
    assert "wall_seconds" in status


def test_an_interrupted_notebook_is_recorded_and_the_interrupt_goes_on(tmp_path, monkeypatch):
    import papermill

    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(papermill, "execute_notebook", interrupt)
    error, status = stopped_run(tmp_path, "pass")
    assert isinstance(error, KeyboardInterrupt)
    assert status["status"] == "interrupted" and "error" not in status


def test_a_run_never_reuses_a_folder(tmp_path):
    first = new_run_dir(None, "smoke", root=tmp_path)
    second = new_run_dir(None, "smoke", root=tmp_path)
    assert first != second
    (first / "keep.txt").write_text("x")
    with pytest.raises(CotlabError, match="not empty"):
        new_run_dir(first, "smoke")


def test_notebook_00_runs_in_the_smoke_profile(tmp_path):
    out = tmp_path / "run"
    result = run_cli("run", "--profile", "smoke", "--only", "00", "--out", str(out))
    assert result.returncode == 0, result.stderr[-2000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["notebooks"]["00_baselines_and_prompting"]["status"] == "done"
    prompting = summary["stages"]["baselines"]["prompting"]
    assert all(set(by_style) == {"direct", "zero_shot_cot", "few_shot_cot"} for by_style in prompting.values())
    assert (out / "00_prompting_task0.png").stat().st_size > 1000
    assert (out / "00_baselines_and_prompting.ipynb").is_file()
    run = json.loads((out / "run.json").read_text())
    assert run["environment"]["versions"]["trl"] and run["seed"] == 0

    # Resuming a finished run re-runs nothing.
    resumed = run_cli("run", "--resume", str(out))
    assert resumed.returncode == 0 and "done earlier, skipped" in resumed.stdout


@pytest.mark.slow
def test_a_killed_run_resumes_from_its_checkpoint_and_evaluations(tmp_path):
    """SIGKILL a real `cotlab run` inside notebook 02 after its SFT checkpoint is written; resume:
    nothing finished is redone (the base evaluation and the checkpoint are reused), the run ends."""
    import os
    import signal
    import subprocess
    import sys
    import time

    from conftest import REPO

    out = tmp_path / "run"
    command = [sys.executable, "-m", "cotlab.cli", "run", "--profile", "smoke", "--only", "02", "--out", str(out)]
    process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    checkpoint = Run(out).training_dir("sft") / "checkpoint-2"
    deadline = time.time() + 600
    while time.time() < deadline and not (checkpoint / "trainer_state.json").is_file():
        time.sleep(0.1)
    os.killpg(process.pid, signal.SIGKILL)  # the runner and its notebook kernel
    process.wait()
    assert checkpoint.is_dir(), "the run ended before its checkpoint was written"
    run = json.loads((out / "run.json").read_text())
    assert run["notebooks"].get("02_sft_lora", {}).get("status") != "done"
    base_eval = Run(out).evaluation_dir("base") / "summary.json"
    stamps = {path: path.stat().st_mtime_ns for path in (base_eval, checkpoint / "trainer_state.json")}

    resumed = run_cli("run", "--resume", str(out))
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["notebooks"]["02_sft_lora"]["status"] == "done" and set(summary["accuracy"]) == {"base", "sft", "sft_answer_only"}
    for path, stamp in stamps.items():
        assert path.stat().st_mtime_ns == stamp, f"{path} was redone instead of reused"


@pytest.mark.slow
def test_the_whole_suite_runs_in_the_smoke_profile(tmp_path):
    """Every notebook, 00 to 11, under papermill with the tiny model: DPO, GRPO and on-policy distillation steps included."""
    out = tmp_path / "suite"
    result = run_cli("run", "--profile", "smoke", "--out", str(out), timeout=1800)
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert all(nb["status"] == "done" for nb in summary["notebooks"].values()) and len(summary["notebooks"]) == len(notebooks())
    assert set(summary["accuracy"]) == set(summary["accuracy_ood"]) == {"base", "sft_answer_only", "sft", "dpo", "grpo"}
    assert {"sft_vs_base", "sft_vs_sft_answer_only", "dpo_vs_sft", "grpo_vs_sft"} <= set(summary["paired"])
    for lesson in ("faithfulness", "scaling", "changes", "rl_expansion", "objectives", "chain_forms", "onpolicy"):
        assert lesson in summary["stages"]
    assert summary["stages"]["onpolicy"]["teacher"].endswith("the run's SFT adapter (notebook 02)")  # 11 ran after 02
    grpo_log = json.loads((Run(out).training_dir("grpo") / "metrics.json").read_text())["log_history"]
    assert any("completions/clipped_ratio" in e for e in grpo_log)
    figures = sorted(p.name for p in out.glob("*.png"))
    for prefix in ("00_", "01_", "02_", "03_", "04_", "05_", "06_", "07_", "08_", "09_", "10_", "11_"):
        assert any(f.startswith(prefix) for f in figures), f"no figure from notebook {prefix}"


@pytest.mark.slow
def test_the_gpu_profile_runs_as_a_batch_job_in_smoke_form(tmp_path, monkeypatch):
    """The gpu profile's own choices (its task, report_to: auto, GRPO in groups, checkpoints) on the
    tiny model at smoke sizes: TensorBoard event files and checkpoints land in the usual layout."""
    monkeypatch.setenv("COTLAB_ALLOW_CPU", "1")  # the gpu profile otherwise stops without CUDA
    sizes = ["model=tiny-random", "n_eval=4", "max_new_tokens=16", "n_train=16", "sft.max_steps=2", "sft.per_device_train_batch_size=4",
             "sweep_steps=1", "lora_ranks=[2]", "grpo.n_prompts=4", "grpo.num_generations=2", "grpo.per_device_train_batch_size=4",
             "grpo.max_completion_length=16", "grpo.max_steps=1", "grpo.guards=warn", "n_eval_ood=4", "max_new_tokens_ood=16"]
    out = tmp_path / "gpu"
    result = run_cli("run", "--profile", "gpu", "--only", "02", "04", "--out", str(out), *[a for s in sizes for a in ("-p", s)], timeout=1200)
    assert result.returncode == 0, result.stderr[-3000:]
    run = json.loads((out / "run.json").read_text())
    assert run["profile"] == "gpu" and run["overrides"]["model"] == "tiny-random"
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary["accuracy"]) == set(summary["accuracy_ood"]) == {"base", "sft", "sft_answer_only", "grpo"}
    assert summary["n_eval"] == summary["n_eval_ood"] == 4 and summary["seed"] == summary["data_seed"] == 0
    assert {"sft_vs_base", "sft_vs_sft_answer_only", "grpo_vs_sft"} <= set(summary["paired"]) and "grpo_vs_sft" in summary["paired_ood"]
    assert all(low <= summary["accuracy_ood"][s] <= high for s, (low, high) in summary["interval_ood"].items())
    for stage in ("sft", "grpo"):
        folder = Run(out).training_dir(stage)
        assert list((folder / "runs").rglob("events.out.tfevents.*")), f"no TensorBoard log for {stage}"
        assert list(folder.glob("checkpoint-*")) and (folder / "final").is_dir()


def test_the_same_seed_gives_the_same_smoke_results(tmp_path):
    """Two fresh runs with the same seed: the same questions and the same (sampled and greedy) answers."""
    outputs = []
    for name in ("a", "b"):
        result = run_cli("run", "--profile", "smoke", "--only", "00", "--out", str(tmp_path / name), "-p", "n_eval=3")
        assert result.returncode == 0, result.stderr[-2000:]
        predictions = sorted((tmp_path / name / "00_baselines").rglob("predictions.jsonl"))
        outputs.append([p.read_text() for p in predictions])
    assert outputs[0] and outputs[0] == outputs[1]


@pytest.mark.slow
def test_a_notebook_run_by_hand_twice_leaves_notebooks_untouched_and_trains_afresh(tmp_path):
    """Notebook 02 executed from notebooks/ as JupyterLab would (no run_dir), twice with different
    learning rates: nothing lands in notebooks/, and the second run's recipe.json has its own rate."""
    import ast
    import os
    import subprocess
    import sys

    import yaml

    def listing():
        return sorted(str(p.relative_to(REPO / "notebooks")) for p in (REPO / "notebooks").rglob("*"))

    before = listing()
    lab = tmp_path / "lab"
    env = {**os.environ, "COTLAB_RUN_DIR": str(lab), "HF_HUB_OFFLINE": "1"}
    sizes = {"model": "tiny-random", "n_train": 16, "sweep_steps": 0, "n_eval": 4, "n_eval_ood": 4,
             "max_new_tokens": 8, "max_new_tokens_ood": 8, "batch_size": 8}
    sft = ast.literal_eval(notebook_parameters(notebooks(["02"])[0])["sft"])  # papermill replaces a dict whole: pass all of it
    for rate in (1e-3, 3e-4):
        recipe = {**sft, "max_steps": 2, "learning_rate": rate}
        result = subprocess.run([sys.executable, "-m", "papermill", "02_sft_lora.ipynb", str(tmp_path / f"out-{rate}.ipynb"),
                                 "-y", yaml.safe_dump({**sizes, "sft": recipe}), "--cwd", str(REPO / "notebooks")],
                                cwd=REPO / "notebooks", env=env, capture_output=True, text=True, timeout=900)
        assert result.returncode == 0, result.stderr[-3000:]
    assert listing() == before
    recipe = json.loads((Run(lab).training_dir("sft") / "final" / "recipe.json").read_text())
    assert recipe["learning_rate"] == 3e-4
    earlier = json.loads((Run(lab).training_dir("sft").with_name("main.earlier-1") / "final" / "recipe.json").read_text())
    assert earlier["learning_rate"] == 1e-3


def test_environment_records_what_dtype_auto_picks_here():
    from cotlab.models import decoding_dtype, dtype_name, resolve_dtype
    from cotlab.runs import environment_info

    info = environment_info()
    assert info["dtype_auto"] == dtype_name(resolve_dtype("auto"))
    assert info["decoding_dtype_auto"] == dtype_name(decoding_dtype("auto"))  # int8 only where measured faster


def test_compare_evaluations_finds_a_changed_completion(tmp_path):
    """scripts/compare_evaluations.py, the check behind "behaviour unchanged" claims."""
    script = REPO / "scripts" / "compare_evaluations.py"
    for name, text in (("a", "4 + 5 = 9"), ("b", "4 + 5 = 9"), ("c", "4 + 5 = 10")):
        folder = tmp_path / name / "02_sft" / "eval_sft"
        folder.mkdir(parents=True)
        (folder / "predictions.jsonl").write_text(json.dumps({"id": "q1", "completion": text}) + "\n")
    same = subprocess.run([sys.executable, str(script), str(tmp_path / "a"), str(tmp_path / "b")], capture_output=True, text=True)
    assert same.returncode == 0 and "identical: 1, different or missing: 0" in same.stdout
    changed = subprocess.run([sys.executable, str(script), str(tmp_path / "a"), str(tmp_path / "c")], capture_output=True, text=True)
    assert changed.returncode == 1 and "DIFFERENT: 02_sft/eval_sft/predictions.jsonl (1 of 1 rows differ)" in changed.stdout
