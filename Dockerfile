# CPU image by default; for NVIDIA GPUs build with --build-arg JAX_EXTRA=cuda12
FROM python:3.11-slim
ARG JAX_EXTRA=""
ENV PYTHONUNBUFFERED=1 MUJOCO_GL=egl
WORKDIR /dreamer
COPY requirements.txt .
RUN pip install --no-cache-dir -r requirements.txt && \
    if [ -n "$JAX_EXTRA" ]; then pip install --no-cache-dir "jax[$JAX_EXTRA]==0.10.2"; fi
COPY . .
ENTRYPOINT ["python", "dreamerv3/main.py"]
CMD ["--configs", "cartpole", "--logdir", "/logdir/cartpole"]
