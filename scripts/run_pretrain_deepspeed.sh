#!/usr/bin/env bash
# Set up .venv if needed, then train the reference GPT with DeepSpeed, started by DeepSpeed's launcher.
# Extra arguments go to trackkit-train and win over the settings below, e.g.
#   NUM_GPUS=2 scripts/run_pretrain_deepspeed.sh --zero-stage 2 --max-steps 2000
#   HOSTFILE=hosts scripts/run_pretrain_deepspeed.sh --deepspeed-config configs/deepspeed/zero3.json

# Settings: edit them here; the environment overrides them (USE_WANDB=false scripts/run_pretrain_deepspeed.sh).
USE_WANDB="${USE_WANDB:-true}"                 # true/false (1/0, yes/no): track with wandb too. Without a W&B
                                              # key (WANDB_API_KEY, api.wandb.ai in ~/.netrc) it runs offline:
                                              # `trackkit sync <run folder>` uploads it later
WANDB_PROJECT="${WANDB_PROJECT:-gpt-pretrain}" # the W&B project (the run's project in every backend)
WANDB_RUN_NAME="${WANDB_RUN_NAME:-}"           # empty: model-<size>-lr-<lr>-<YYYYmmdd_HHMMSS>
MODEL_SIZE="${MODEL_SIZE:-tiny}"               # tiny, gpt2-124m, or <n>layer (tiny with n layers)
LEARNING_RATE="${LEARNING_RATE:-1e-3}"
BATCH_SIZE="${BATCH_SIZE:-12}"                 # per process (DeepSpeed's micro-batch)
NUM_EPOCHS="${NUM_EPOCHS:-4}"
OUTPUT_DIR="${OUTPUT_DIR:-runs/$(date +%Y%m%d-%H%M%S)}"
# Processes and machines:
#   NUM_GPUS        processes per machine (default: the GPUs nvidia-smi lists; on a machine without
#                   GPUs, 1). Without GPUs each process is a CPU worker (gloo); any number works.
#   HOSTFILE        a DeepSpeed hostfile ("hostname slots=N", one machine per line) to train on several
#                   machines; the launcher starts the processes there over passwordless ssh. The
#                   repository and .venv must be at this same path on every machine, and the output
#                   directory on a filesystem they share (default: this machine only).
#   MASTER_PORT     port of the processes' rendezvous on the first machine (default: 29500)

set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)  # paths given (OUTPUT_DIR, --data) stay relative to where it was started
source "$repo/scripts/train_args.sh"    # checks the settings first: a bad one writes nothing
"$repo/scripts/setup.sh"

launcher=("$repo/.venv/bin/deepspeed" --master_port "${MASTER_PORT:-29500}")
if [ -n "${HOSTFILE:-}" ]; then
  if [ ! -f "$HOSTFILE" ]; then
    echo "run_pretrain_deepspeed.sh: HOSTFILE $HOSTFILE does not exist" >&2
    exit 2
  fi
  launcher+=(--hostfile "$HOSTFILE")
  if [ -n "${NUM_GPUS:-}" ]; then
    launcher+=(--num_gpus "$NUM_GPUS")
  fi
else
  gpus=$( (command -v nvidia-smi >/dev/null && nvidia-smi -L 2>/dev/null) | grep -c "^GPU" || true)
  if [ "$gpus" -eq 0 ]; then
    # DeepSpeed's launcher would probe for accelerators and warn that it fell back to the CPU.
    export DS_ACCELERATOR=cpu
    # CPU workers share the cores: each gets its share of threads, not a thread per core.
    share=$(( $(nproc) / ${NUM_GPUS:-1} ))
    export OMP_NUM_THREADS="${OMP_NUM_THREADS:-$(( share > 0 ? share : 1 ))}"
  fi
  launcher+=(--num_gpus "${NUM_GPUS:-$(( gpus > 0 ? gpus : 1 ))}")
fi
# The absolute path: on other machines the launcher runs it from there (in this same folder).
exec "${launcher[@]}" "$repo/.venv/bin/trackkit-train" --deepspeed "${train_args[@]}" "$@"
