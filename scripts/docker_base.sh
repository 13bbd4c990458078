#!/usr/bin/env bash
# A base image for the Dockerfile made without Docker Hub: a minimal Debian
# (debootstrap from a Debian mirror) with python3 and a venv at /opt/venv
# that is first on PATH, so `python` and `pip` are the venv's. Used where
# python:3.12-slim cannot be pulled (tests/test_docker.py with --docker):
#   scripts/docker_base.sh                       # makes dreamer-base:bookworm
#   docker build --build-arg BASE=dreamer-base:bookworm -t dreamer .
# Bookworm's python3 is 3.11 (requirements.txt's tested version). Needs root,
# debootstrap (apt-get install debootstrap) and a Docker daemon. An existing
# tag is kept (FORCE=1 remakes it).
# Environment: SUITE (bookworm), MIRROR (http://deb.debian.org/debian).
set -euo pipefail
tag="${1:-dreamer-base:${SUITE:-bookworm}}"
suite="${SUITE:-bookworm}"
mirror="${MIRROR:-http://deb.debian.org/debian}"
if [ -z "${FORCE:-}" ] && docker image inspect "$tag" >/dev/null 2>&1; then
  echo "$tag exists (FORCE=1 remakes it)."
  exit 0
fi
root="$(mktemp -d /tmp/dreamer-base.XXXXXX)"
# --one-file-system: never into a /proc or /sys that a failed debootstrap
# left mounted.
trap 'umount -R "$root/proc" "$root/sys" 2>/dev/null || true
      rm -rf --one-file-system "$root"' EXIT
debootstrap --variant=minbase --include=python3,python3-venv \
  "$suite" "$root" "$mirror"
# A venv, as Debian's pip refuses to install into the system Python (PEP 668).
chroot "$root" python3 -m venv /opt/venv
chroot "$root" apt-get clean
rm -rf "$root"/var/lib/apt/lists/* "$root"/usr/share/doc/* \
  "$root"/usr/share/man/* "$root"/usr/share/locale/*
path=/opt/venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
tar -C "$root" --numeric-owner -c . | docker import \
  --change "ENV PATH=$path" \
  --change 'ENV LANG=C.UTF-8' \
  --change 'CMD ["python"]' \
  - "$tag"
docker run --rm "$tag" python --version
