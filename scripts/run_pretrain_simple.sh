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

args=()
if [ "${USE_WANDB:-true}" = "true" ]; then
  args+=(--use_wandb --wandb_project "${WANDB_PROJECT:-gpt-pretrain}")
  if [ -n "${WANDB_RUN_NAME:-}" ]; then
    args+=(--wandb_run_name "$WANDB_RUN_NAME")
  fi
  if [ -z "${WANDB_API_KEY:-}" ] && [ -z "${WANDB_MODE:-}" ] && ! grep -qs "api.wandb.ai" "${NETRC:-$HOME/.netrc}"; then
    echo "run_pretrain_simple.sh: no W&B API key configured; wandb runs offline (upload later: trackkit sync <run folder>)" >&2
    args+=(--offline)
  fi
fi
exec .venv/bin/trackkit-train "${args[@]}" "$@"
