# CPU image by default; for NVIDIA GPUs build with --build-arg JAX_EXTRA=cuda12.
# --build-arg ENVS=1 adds the optional suites (DeepMind Control, BSuite) and
# the headless OpenGL library that DMC image observations render with.
FROM python:3.11-slim
ARG JAX_EXTRA=""
ARG ENVS=""
ENV PYTHONUNBUFFERED=1 MUJOCO_GL=egl
WORKDIR /dreamer
COPY requirements.txt requirements-envs.txt ./
RUN if [ -n "$ENVS" ]; then \
      apt-get update && apt-get install -y --no-install-recommends libegl1 && \
      rm -rf /var/lib/apt/lists/*; fi && \
    pip install --no-cache-dir -r requirements.txt && \
    if [ -n "$ENVS" ]; then pip install --no-cache-dir -r requirements-envs.txt; fi && \
    if [ -n "$JAX_EXTRA" ]; then pip install --no-cache-dir "jax[$JAX_EXTRA]==0.10.2"; fi
COPY . .
ENTRYPOINT ["python", "dreamerv3/main.py"]
CMD ["--configs", "cartpole", "--logdir", "/logdir/cartpole"]
