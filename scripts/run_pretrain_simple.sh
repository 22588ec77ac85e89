#!/usr/bin/env bash
# Set up .venv if needed, then train the reference GPT with the plain PyTorch engine.
#   USE_WANDB       true (default) adds --use_wandb; any other value trains without wandb.
#                   With no W&B API key configured (WANDB_API_KEY, or api.wandb.ai in ~/.netrc)
#                   wandb runs offline: `trackkit sync <run folder>` uploads it later.
#   WANDB_PROJECT   W&B project (default: gpt-pretrain)
#   WANDB_RUN_NAME  W&B run name (default: the run folder's name)
# Extra arguments go to trackkit-train, e.g.
#   scripts/run_pretrain_simple.sh --max-steps 2000 --output-dir runs/char-2k --tracker tensorboard
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
source scripts/wandb_args.sh
exec .venv/bin/trackkit-train "${wandb_args[@]}" "$@"
