#!/usr/bin/env bash
# Set up .venv if needed, then train the reference GPT with the plain PyTorch engine.
# Extra arguments go to trackkit-train and win over the settings below, e.g.
#   scripts/run_pretrain_simple.sh --max-steps 2000 --tracker tensorboard
#   USE_WANDB=false OUTPUT_DIR=runs/char-2k scripts/run_pretrain_simple.sh --max-steps 2000

# Settings: edit them here; the environment overrides them (USE_WANDB=false scripts/run_pretrain_simple.sh).
USE_WANDB="${USE_WANDB:-true}"                 # true/false (1/0, yes/no): track with wandb too. Without a W&B
                                              # key (WANDB_API_KEY, api.wandb.ai in ~/.netrc) it runs offline:
                                              # `trackkit sync <run folder>` uploads it later
WANDB_PROJECT="${WANDB_PROJECT:-gpt-pretrain}" # the W&B project (the run's project in every backend)
WANDB_RUN_NAME="${WANDB_RUN_NAME:-}"           # empty: model-<size>-lr-<lr>-<YYYYmmdd_HHMMSS>
MODEL_SIZE="${MODEL_SIZE:-tiny}"               # tiny, gpt2-124m, or <n>layer (tiny with n layers)
LEARNING_RATE="${LEARNING_RATE:-1e-3}"
BATCH_SIZE="${BATCH_SIZE:-12}"
NUM_EPOCHS="${NUM_EPOCHS:-4}"
OUTPUT_DIR="${OUTPUT_DIR:-runs/$(date +%Y%m%d-%H%M%S)}"

set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)  # paths given (OUTPUT_DIR, --data) stay relative to where it was started
source "$repo/scripts/train_args.sh"    # checks the settings first: a bad one writes nothing
"$repo/scripts/setup.sh"
exec "$repo/.venv/bin/trackkit-train" "${train_args[@]}" "$@"
