#!/usr/bin/env bash
# Set up .venv if needed, then train the reference GPT with DeepSpeed, started by DeepSpeed's launcher.
# Extra arguments go to trackkit-train and win over the settings below, e.g.
#   NUM_GPUS=2 scripts/run_pretrain_deepspeed.sh --zero-stage 2 --max-steps 2000
#   HOSTFILE=hosts scripts/run_pretrain_deepspeed.sh --deepspeed-config configs/deepspeed/zero3.json
#
# Two machines, node1 and node2, with 8 GPUs each, a filesystem both mount at /shared, and this
# repository (with its .venv) at the same path on both. Write the hostfile, the same on both:
#   node1 slots=8
#   node2 slots=8
# then, without ssh between them, start the same command on each machine, NODE_RANK 0 on node1 (the
# hostfile's first line: the processes meet there, and its first process tracks the run) and 1 on node2:
#   node1$ HOSTFILE=hosts NODE_RANK=0 MASTER_ADDR=node1 OUTPUT_DIR=/shared/runs/gpt scripts/run_pretrain_deepspeed.sh
#   node2$ HOSTFILE=hosts NODE_RANK=1 MASTER_ADDR=node1 OUTPUT_DIR=/shared/runs/gpt scripts/run_pretrain_deepspeed.sh
# The same two commands with --resume continue the run after a stop. With passwordless ssh from node1
# to both, leave NODE_RANK out and run the command on node1 only: the launcher starts node2's part.

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
OUTPUT_DIR="${OUTPUT_DIR:-runs/$(date +%Y%m%d-%H%M%S)}"  # with NODE_RANK: give one, the same on every machine
# Processes and machines:
#   NUM_GPUS        processes per machine (default: the GPUs nvidia-smi lists; on a machine without
#                   GPUs, 1). Without GPUs each process is a CPU worker (gloo); any number works.
#   HOSTFILE        a DeepSpeed hostfile ("hostname slots=N", one machine per line) to train on several
#                   machines (default: this machine only). The repository and .venv must be at this
#                   same path on every machine, and the output directory on a filesystem they share.
#   NODE_RANK       with HOSTFILE: start this machine's processes only (its line in the hostfile, from
#                   0), without ssh; run the script on every machine. Without it the launcher starts
#                   every machine's processes from this one over passwordless ssh.
#   MASTER_ADDR     the hostfile's first machine, where the processes meet (required with NODE_RANK;
#                   otherwise the launcher asks that machine over ssh)
#   MASTER_PORT     port of the processes' rendezvous there (default: 29500)

set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)  # paths given (OUTPUT_DIR, --data) stay relative to where it was started
say_error() { echo "Error: $*" >&2; exit 2; }
if [ -n "${NODE_RANK:-}" ]; then
  [ -n "${HOSTFILE:-}" ] || say_error "NODE_RANK needs HOSTFILE: the machines, one per line, the same file on each"
  [ -n "${MASTER_ADDR:-}" ] || say_error "NODE_RANK needs MASTER_ADDR: the hostfile's first machine, where the processes meet"
  # The default run folder is named after the start time, which differs between machines.
  [[ ! "$OUTPUT_DIR" =~ ^runs/[0-9]{8}-[0-9]{6}$ ]] || printf '%s\n' "$@" | grep -q -- '^--output[-_]dir' \
    || say_error "NODE_RANK needs OUTPUT_DIR (or --output-dir): the same folder on every machine, on a shared filesystem"
fi
source "$repo/scripts/train_args.sh"    # checks the settings first: a bad one writes nothing
"$repo/scripts/setup.sh"

launcher=("$repo/.venv/bin/deepspeed" --master_port "${MASTER_PORT:-29500}")
if [ -n "${HOSTFILE:-}" ]; then
  [ -f "$HOSTFILE" ] || say_error "HOSTFILE $HOSTFILE does not exist"
  launcher+=(--hostfile "$HOSTFILE")
  if [ -n "${NODE_RANK:-}" ]; then
    launcher+=(--no_ssh --node_rank "$NODE_RANK")
  fi
  if [ -n "${MASTER_ADDR:-}" ]; then
    launcher+=(--master_addr "$MASTER_ADDR")
  fi
  if [ -n "${NUM_GPUS:-}" ]; then
    launcher+=(--num_gpus "$NUM_GPUS")
  fi
fi
gpus=$( (command -v nvidia-smi >/dev/null && nvidia-smi -L 2>/dev/null) | grep -c "^GPU" || true)
if [ "$gpus" -eq 0 ]; then
  # DeepSpeed's launcher would probe for accelerators and warn that it fell back to the CPU.
  export DS_ACCELERATOR=cpu
  # CPU workers share the cores: each gets its share of threads, not a thread per core.
  share=$(( $(nproc) / ${NUM_GPUS:-1} ))
  export OMP_NUM_THREADS="${OMP_NUM_THREADS:-$(( share > 0 ? share : 1 ))}"
fi
if [ -z "${HOSTFILE:-}" ]; then
  launcher+=(--num_gpus "${NUM_GPUS:-$(( gpus > 0 ? gpus : 1 ))}")
fi
# The absolute path: on other machines the launcher runs it from there (in this same folder).
exec "${launcher[@]}" "$repo/.venv/bin/trackkit-train" --deepspeed "${train_args[@]}" "$@"
