# DreamerV3 on CPU by default. Builds (see also compose.yaml, scripts/docker.sh):
#   docker build -t dreamer .                                # CPU
#   docker build --build-arg JAX_EXTRA=cuda12 -t dreamer:gpu .
#     then: docker run --gpus all ...  (host: NVIDIA driver + container toolkit;
#     the CUDA libraries come as pip wheels, so the base stays python-slim)
#   --build-arg ENVS=1     adds requirements-envs.txt (DMC, BSuite, Memory Maze,
#                          LocoNav) and the headless OpenGL library for DMC images
#   --build-arg UID=$(id -u) --build-arg GID=$(id -g)
#                          lets the container user own what it writes to a
#                          bind-mounted logdir
#   --build-arg BASE=...   another base with `python` (>= 3.11) and `pip` on
#                          PATH, e.g. dreamer-base:bookworm made by
#                          scripts/docker_base.sh (no Docker Hub needed)
#   --build-arg PIP_INDEX_URL=...  a package index mirror, or
#   --build-arg PIP_NO_INDEX=1 --build-arg PIP_FIND_LINKS=http://HOST:PORT/
#                          a wheelhouse served over HTTP (with --network host
#                          for a server on the host's 127.0.0.1). For this build
#                          only, but `docker history` shows them: no passwords.
# The agent runs as the non-root user `dreamer`; runs write to the volume
# /logdir and JAX's compilation cache to /home/dreamer/.cache. `docker stop`
# sends SIGTERM: main.py saves a checkpoint and exits with status 3, and the
# same command resumes from the logdir (give it time: docker stop -t 60).
ARG BASE=python:3.12-slim
FROM ${BASE}
ARG JAX_EXTRA=""
ARG ENVS=""
ARG UID=1000
ARG GID=1000
ENV PYTHONUNBUFFERED=1 MUJOCO_GL=egl \
    PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
# The group may exist already (e.g. GID 20 from macOS is `dialout` here).
RUN (getent group "$GID" >/dev/null || groupadd --gid "$GID" dreamer) && \
    useradd --uid "$UID" --gid "$GID" --create-home --shell /bin/bash dreamer && \
    mkdir -p /logdir /home/dreamer/.cache && \
    chown "$UID:$GID" /logdir /home/dreamer/.cache
WORKDIR /dreamer
COPY requirements.txt requirements-envs.txt ./
# Unset unless given; pip reads them from the environment. Declared here, as
# a changed value reruns only the steps after it.
ARG PIP_INDEX_URL
ARG PIP_NO_INDEX
ARG PIP_FIND_LINKS
# jax[cuda12] at the version requirements.txt pins.
RUN if [ -n "$ENVS" ]; then \
      apt-get update && apt-get install -y --no-install-recommends libegl1 && \
      rm -rf /var/lib/apt/lists/*; fi && \
    pip install -r requirements.txt && \
    if [ -n "$ENVS" ]; then pip install -r requirements-envs.txt; fi && \
    if [ -n "$JAX_EXTRA" ]; then \
      pip install "jax[$JAX_EXTRA]==$(sed -n 's/^jax==//p' requirements.txt)"; fi
# Code stays root-owned: the run user reads it but writes only the volumes.
COPY . .
USER dreamer
VOLUME ["/logdir"]
ENTRYPOINT ["python", "dreamerv3/main.py"]
CMD ["--configs", "cartpole", "--logdir", "/logdir/cartpole"]
