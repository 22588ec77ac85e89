# Sourced by the run_pretrain_*.sh scripts, after their settings: checks them and puts the
# trackkit-train arguments they ask for in the array train_args. Extra arguments ("$@") come
# after these in trackkit-train's command line, so they win.
#   USE_WANDB       true, false, 1, 0, yes or no, in any case; anything else is an error (exit 2)
#   MODEL_SIZE      a preset (tiny, gpt2-124m) or <n>layer (the tiny preset with n layers), as in
#                   the guide's run names (model-6layer-lr-1e4-...)
# With --resume among the extra arguments, MODEL_SIZE, LEARNING_RATE, BATCH_SIZE and NUM_EPOCHS
# are left out: the checkpoint has the run's settings, and a flag given again changes one.
case "${USE_WANDB,,}" in
  true | 1 | yes) use_wandb=1 ;;
  false | 0 | no) use_wandb=0 ;;
  *)
    echo "Error: USE_WANDB must be true or false (or 1/0, yes/no), not '$USE_WANDB'" >&2
    exit 2
    ;;
esac

train_args=()
resuming=0
for arg in "$@"; do
  case "$arg" in --resume | --resume=*) resuming=1 ;; esac
done
if [ "$resuming" = 0 ]; then
  if [[ "$MODEL_SIZE" =~ ^([0-9]+)layer$ ]]; then
    train_args+=(--n_layer "${BASH_REMATCH[1]}")
  else
    train_args+=(--model "$MODEL_SIZE")
  fi
  train_args+=(--learning_rate "$LEARNING_RATE" --batch_size "$BATCH_SIZE" --num_epochs "$NUM_EPOCHS")
fi
if [ -n "$OUTPUT_DIR" ]; then
  train_args+=(--output_dir "$OUTPUT_DIR")
fi

if [ "$use_wandb" = 1 ]; then
  train_args+=(--use_wandb --wandb_project "$WANDB_PROJECT")
  if [ -n "$WANDB_RUN_NAME" ]; then
    train_args+=(--wandb_run_name "$WANDB_RUN_NAME")
  fi
  if [ -z "${WANDB_API_KEY:-}" ] && [ -z "${WANDB_MODE:-}" ] && ! grep -qs "api.wandb.ai" "${NETRC:-$HOME/.netrc}"; then
    echo "$(basename "$0"): no W&B API key configured; wandb runs offline (upload later: trackkit sync <run folder>)" >&2
    train_args+=(--offline)
  fi
fi
