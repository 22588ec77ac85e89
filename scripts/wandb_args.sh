# Sourced by the run_pretrain_*.sh scripts: the trackkit-train arguments that USE_WANDB,
# WANDB_PROJECT and WANDB_RUN_NAME ask for, in the array wandb_args.
#   USE_WANDB       true (default) adds --use_wandb; any other value trains without wandb.
#                   With no W&B API key configured (WANDB_API_KEY, or api.wandb.ai in ~/.netrc)
#                   wandb runs offline: `trackkit sync <run folder>` uploads it later.
#   WANDB_PROJECT   W&B project (default: gpt-pretrain)
#   WANDB_RUN_NAME  W&B run name (default: the run folder's name)
wandb_args=()
if [ "${USE_WANDB:-true}" = "true" ]; then
  wandb_args+=(--use_wandb --wandb_project "${WANDB_PROJECT:-gpt-pretrain}")
  if [ -n "${WANDB_RUN_NAME:-}" ]; then
    wandb_args+=(--wandb_run_name "$WANDB_RUN_NAME")
  fi
  if [ -z "${WANDB_API_KEY:-}" ] && [ -z "${WANDB_MODE:-}" ] && ! grep -qs "api.wandb.ai" "${NETRC:-$HOME/.netrc}"; then
    echo "$(basename "$0"): no W&B API key configured; wandb runs offline (upload later: trackkit sync <run folder>)" >&2
    wandb_args+=(--offline)
  fi
fi
