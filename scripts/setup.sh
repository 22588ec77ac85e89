#!/usr/bin/env bash
# Create .venv with trackkit, the reference trainer and everything the tests need.
# Safe to run again: it only installs what is missing. WITH_PLUGINS=1 also installs plugins/*.
#   PYTHON=python3.11 scripts/setup.sh          choose the interpreter
#   TORCH_INDEX_URL=<wheel index> scripts/setup.sh   e.g. PyTorch's CPU-only index on a machine without a GPU
set -euo pipefail
cd "$(dirname "$0")/.."

if [ ! -x .venv/bin/python ]; then
  "${PYTHON:-python3}" -m venv .venv
fi
PIP=(.venv/bin/python -m pip install --quiet --disable-pip-version-check)
quiet_pip() {  # pip warns about every package missing from a local mirror; keep the rest of stderr
  "${PIP[@]}" "$@" 2> >(grep -v "is ignored: it is neither a file nor a directory" >&2)
}

if ! .venv/bin/python -c "import torch" >/dev/null 2>&1; then
  if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
    echo "setup: GPU found, installing a CUDA build of torch"
    quiet_pip torch
  else
    # The pinned release is the CPU build that ships on our CI machines; elsewhere set
    # TORCH_INDEX_URL to a CPU wheel index to avoid the multi-GB CUDA download.
    echo "setup: no GPU, installing torch 2.13.0${TORCH_INDEX_URL:+ from $TORCH_INDEX_URL}"
    quiet_pip "torch==2.13.0" ${TORCH_INDEX_URL:+--index-url "$TORCH_INDEX_URL"}
  fi
fi

if ! .venv/bin/python -c "import trackkit, wandb, tensorboard, deepspeed, tokenizers, matplotlib, pytest, transformers, lightning, accelerate" >/dev/null 2>&1 \
   || [ pyproject.toml -nt .venv/.trackkit-installed ]; then
  echo "setup: installing trackkit with all extras into .venv"
  quiet_pip -e ".[all]"
  touch .venv/.trackkit-installed
fi

# The trackers in plugins/ are separate distributions, installed the way a user installs one.
if [ "${WITH_PLUGINS:-0}" = 1 ] && { ! .venv/bin/python -c "import trackkit_mlflow, trackkit_csv" >/dev/null 2>&1 \
   || [ plugins/trackkit-csv/pyproject.toml -nt .venv/.plugins-installed ] \
   || [ plugins/trackkit-mlflow/pyproject.toml -nt .venv/.plugins-installed ]; }; then
  echo "setup: installing the plugins in plugins/"
  quiet_pip -e plugins/trackkit-mlflow -e plugins/trackkit-csv
  touch .venv/.plugins-installed
fi
