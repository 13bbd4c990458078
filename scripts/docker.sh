#!/usr/bin/env bash
# Build the image and run the agent in it, logging to ./logdir on the host.
#   scripts/docker.sh --configs atari100k size12m --logdir /logdir/pong
# GPU: JAX_EXTRA=cuda12 scripts/docker.sh ... (needs the NVIDIA container toolkit)
# DMC and BSuite: ENVS=1 scripts/docker.sh --configs dmc_vision size12m ...
set -euo pipefail
cd "$(dirname "$0")/.."
extra="${JAX_EXTRA:-}"
docker build --build-arg JAX_EXTRA="$extra" --build-arg ENVS="${ENVS:-}" -t dreamer .
gpus=()
[ -n "$extra" ] && gpus=(--gpus all)
docker run --rm -it "${gpus[@]}" -v "$PWD/logdir:/logdir" dreamer "$@"
