#!/usr/bin/env bash
# Submit one training run per seed to SLURM. Re-submitting the same logdir
# resumes from its last checkpoint (e.g. after preemption or a time limit).
#   scripts/slurm.sh ~/logdir/pong "0 1 2" --configs atari100k size12m --task atari100k_pong
# Environment: PARTITION, TIME (default 2-00:00:00), GPUS (default 1), CPUS (default 8).
set -euo pipefail
if [ $# -lt 2 ]; then
  echo "usage: $0 LOGDIR_PREFIX \"SEEDS\" [main.py flags...]" >&2
  exit 2
fi
prefix="$1"; seeds="$2"; shift 2
repo="$(cd "$(dirname "$0")/.." && pwd)"
for seed in $seeds; do
  logdir="$prefix/seed$seed"
  mkdir -p "$logdir"
  sbatch --job-name "dreamer-$(basename "$prefix")-$seed" \
    ${PARTITION:+--partition "$PARTITION"} --time "${TIME:-2-00:00:00}" \
    --gres "gpu:${GPUS:-1}" --cpus-per-task "${CPUS:-8}" --requeue \
    --signal=B:USR1@120 --output "$logdir/slurm-%j.out" \
    --wrap "cd '$repo' && python dreamerv3/main.py --logdir '$logdir' --seed $seed $*"
done
