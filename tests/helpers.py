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


def config_and_spaces(argv):
  """The parsed config of argv and its task's observation and action
  spaces (log keys and reset included, as the agent wrapper gets them)."""
  from dreamerv3 import main as dmain
  config = dmain.parse(argv)
  env = dmain.make_env(config, 0)
  obs_space, act_space = env.obs_space, env.act_space
  env.close()
  return config, obs_space, act_space


def random_batch(agent, seed):
  """A random train batch of the agent's shape: random observations and
  actions, zero policy latents, an episode ending and one starting inside
  every sequence."""
  rng = np.random.default_rng(seed)
  data = agent._dummy_batch()
  B, T = data['is_first'].shape
  for key, space in agent.obs_space.items():
    if key == 'image':
      data[key] = rng.integers(0, 2, data[key].shape).astype(np.uint8) * 255
    elif np.issubdtype(space.dtype, np.floating):
      data[key] = rng.normal(0, 1, data[key].shape).astype(space.dtype)
  data['is_first'][:, 0] = True
  data['is_terminal'][:, -3] = True
  data['is_last'][:, -3] = True
  data['is_first'][:, -2] = True
  space = agent.act_space['action']
  if space.discrete:
    data['action'] = rng.integers(0, space.high, (B, T)).astype(space.dtype)
  else:
    data['action'] = rng.uniform(-1, 1, (B, T, *space.shape)).astype(
        space.dtype)
  data['stepid'] = rng.integers(0, 2 ** 31, (B, T))
  return data


def replay_step(worker, t):
  """One replay step of env stream `worker` at time t, identifiable by its
  values, with a log key that replay must drop."""
  return {
      't': np.int64(t), 'w': np.int32(worker),
      'image': np.full((2, 3), t % 256, np.uint8),
      'log/ignored': np.float32(1)}
