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


def model_spaces(config):
  """The observation and action spaces the agent sees for a config's task
  (no log keys, no reset)."""
  from dreamerv3 import main as dmain
  env = dmain.make_env(config, 0)
  obs_space = {k: v for k, v in env.obs_space.items()
               if not k.startswith('log/')}
  act_space = {k: v for k, v in env.act_space.items() if k != 'reset'}
  env.close()
  return obs_space, act_space


def zeros_batch(model, batch=2, length=None):
  """A train batch of zeros for a Dreamer model: every observation, action
  and replay key, and stepid. length: batch_length + replay_context."""
  if length is None:
    length = model.config.batch_length + model.config.replay_context
  spaces = {**model.obs_space, **model.act_space, **model.ext_space()}
  data = {k: np.zeros((batch, length, *s.shape), s.dtype)
          for k, s in spaces.items()}
  data['stepid'] = np.zeros((batch, length), np.int64)
  return data


def train_shapes(model, data):
  """The parameter shapes the model's train step creates: traced with
  jax.eval_shape, nothing compiled or run."""
  return jax.eval_shape(lambda d: nj.pure(model.train)(
      {}, d, create=True, ignore=True, seed=np.uint32([0, 0]))[0], data)
