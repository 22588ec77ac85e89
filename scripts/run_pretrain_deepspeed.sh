#!/usr/bin/env bash
# Set up .venv if needed, then train the reference GPT with DeepSpeed, started by DeepSpeed's launcher.
#   NUM_GPUS        processes per machine (default: the GPUs nvidia-smi lists; on a machine without
#                   GPUs, 1). Without GPUs each process is a CPU worker (gloo); any number works.
#   HOSTFILE        a DeepSpeed hostfile ("hostname slots=N", one machine per line) to train on several
#                   machines; the launcher starts the processes there over passwordless ssh. The
#                   repository and .venv must be at this same path on every machine, and the output
#                   directory on a filesystem they share (default: this machine only).
#   MASTER_PORT     port of the processes' rendezvous on the first machine (default: 29500)
#   USE_WANDB, WANDB_PROJECT, WANDB_RUN_NAME   as in run_pretrain_simple.sh (scripts/wandb_args.sh)
# Extra arguments go to trackkit-train, e.g.
#   NUM_GPUS=2 scripts/run_pretrain_deepspeed.sh --zero-stage 2 --max-steps 2000
#   HOSTFILE=hosts scripts/run_pretrain_deepspeed.sh --deepspeed-config configs/deepspeed/zero3.json
set -euo pipefail
if [ -n "${HOSTFILE:-}" ]; then
  HOSTFILE=$(realpath -m -- "$HOSTFILE")  # as given from the caller's folder; the script moves to the repository's
fi
cd "$(dirname "$0")/.."
scripts/setup.sh
source scripts/wandb_args.sh

launcher=(.venv/bin/deepspeed --master_port "${MASTER_PORT:-29500}")
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
# The absolute path: on other machines the launcher runs it from there.
exec "${launcher[@]}" "$PWD/.venv/bin/trackkit-train" --deepspeed "${wandb_args[@]}" "$@"
