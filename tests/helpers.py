"""Shared test utilities."""

import math

import jax
import jax.numpy as jnp
import ninjax as nj
import numpy as np


def fill_params(method, *args, seed=0):
  """State for nj.pure(method) without running the initializers: shapes come
  from jax.eval_shape (nothing compiled) and values from NumPy. Compiling
  the jax.random initializers costs seconds per tensor on CPU."""
  shapes = jax.eval_shape(lambda *a: nj.pure(method)(
      {}, *a, create=True, seed=np.uint32([0, 0]))[0], *args)
  rng = np.random.default_rng(seed)
  state = {}
  for key, s in sorted(shapes.items()):
    if len(s.shape) >= 2:  # Kernels, scaled by fan-in.
      fan_in = s.shape[-2] if len(s.shape) == 3 else math.prod(s.shape[:-1])
      value = rng.normal(0, 1 / math.sqrt(fan_in), s.shape)
    else:  # Norm scales near 1, biases and statistics near 0.
      value = float(key.endswith('scale')) + rng.normal(0, 0.1, s.shape)
    state[key] = jnp.asarray(value, s.dtype)
  return state
