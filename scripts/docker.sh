#!/usr/bin/env bash
# Build the image and run the agent in it under your user id, logging to
# ./logdir on the host (mounted as /logdir):
#   scripts/docker.sh --configs cartpole --logdir /logdir/cartpole
# GPU: JAX_EXTRA=cuda12 scripts/docker.sh ... (needs the NVIDIA container toolkit)
# DMC, BSuite, Memory Maze, LocoNav: ENVS=1 scripts/docker.sh ...
# Another base image: BASE=dreamer-base:bookworm scripts/docker.sh ... (made
# by scripts/docker_base.sh where Docker Hub is out of reach).
# Ctrl-C or docker stop: the run saves a checkpoint; the same command resumes.
set -euo pipefail
cd "$(dirname "$0")/.."
extra="${JAX_EXTRA:-}"
tag="dreamer:${extra:-cpu}"
uid="$(id -u)" gid="$(id -g)"
mkdir -p logdir
if [ "$uid" -eq 0 ]; then  # The image's user is never root.
  uid=1000 gid=1000
  chown "$uid:$gid" logdir
fi
build=(--build-arg JAX_EXTRA="$extra" --build-arg ENVS="${ENVS:-}"
       --build-arg UID="$uid" --build-arg GID="$gid")
# Unset: the Dockerfile's default base.
[ -n "${BASE:-}" ] && build+=(--build-arg BASE="$BASE")
docker build "${build[@]}" -t "$tag" .
args=(--rm --init --stop-timeout 60 -v "$PWD/logdir:/logdir"
      -v "dreamer-jax-cache-${extra:-cpu}:/home/dreamer/.cache")
[ -n "$extra" ] && args+=(--gpus all)
[ -t 0 ] && args+=(-it)
docker run "${args[@]}" "$tag" "$@"
