"""Any registered gymnasium env as gym_<id>, e.g. gym_CartPole-v1.

Observations: 3-dim uint8 Box -> 'image' (2-dim uint8 Box gets a channel
axis), other Box -> 'vector' float32 flattened, Discrete -> one-hot 'vector',
Dict -> one key per entry with the same rules. Actions: Discrete -> int32
'action' in [0, n), Box -> float32 'action' with the box bounds, Dict -> one
key per entry.
"""

import elements
import gymnasium
import numpy as np

from . import UnknownTaskError
from ..core import base

RESERVED = ('reward', 'is_first', 'is_last', 'is_terminal', 'reset')


def make(name, *, seed=0, size=None, **kwargs):
  del size  # Gym envs render at their own size; make() resizes afterwards.
  try:
    env = gymnasium.make(name, **kwargs)
  except (gymnasium.error.UnregisteredEnv, gymnasium.error.DeprecatedEnv) as e:
    raise UnknownTaskError(
        f"Unknown task 'gym_{name}': gymnasium has no env id '{name}' ({e})"
    ) from e
  return Gym(env, seed=seed)


class Gym(base.Env):

  def __init__(self, env, seed=0):
    self._env = gymnasium.make(env) if isinstance(env, str) else env
    self._seed = seed  # Used on the first reset only, then the env's RNG runs on.
    self._done = True
    self._obs_conv = _converters(self._env.observation_space, _obs_conv, 'obs')
    self._act_conv = _converters(self._env.action_space, _act_conv, 'act')
    self._obs_spaces = {k: v[1] for k, v in self._obs_conv.items()}
    self._act_spaces = {k: v[1] for k, v in self._act_conv.items()}
    self._dict_obs = isinstance(
        self._env.observation_space, gymnasium.spaces.Dict)
    self._dict_act = isinstance(self._env.action_space, gymnasium.spaces.Dict)
    # Non-dict spaces have a single converter; keep it at hand for speed.
    if not self._dict_obs:
      (self._obs_key, (_, _, self._obs_fn)), = self._obs_conv.items()
    if not self._dict_act:
      (_, _, self._act_fn), = self._act_conv.values()

  @property
  def gym_env(self):
    return self._env

  @property
  def obs_space(self):
    return {
        **self._obs_spaces,
        **base.step_spaces(),
    }

  @property
  def act_space(self):
    return {**self._act_spaces, 'reset': elements.Space(bool)}

  def step(self, action):
    if action['reset'] or self._done:
      self._done = False
      if self._seed is not None:
        obs, _ = self._env.reset(seed=self._seed)
        self._seed = None
      else:
        obs, _ = self._env.reset()
      return self._obs(obs, 0.0, True, False, False)
    if self._dict_act:
      act = {n: fn(action[k]) for k, (n, _, fn) in self._act_conv.items()}
    else:
      act = self._act_fn(action['action'])
    obs, reward, terminated, truncated, _ = self._env.step(act)
    self._done = bool(terminated or truncated)
    return self._obs(obs, reward, False, self._done, bool(terminated))

  def close(self):
    self._env.close()

  def _obs(self, obs, reward, is_first, is_last, is_terminal):
    if self._dict_obs:
      out = {k: fn(obs[n]) for k, (n, _, fn) in self._obs_conv.items()}
    else:
      out = {self._obs_key: self._obs_fn(obs)}
    out['reward'] = np.float32(reward)
    out['is_first'] = np.bool_(is_first)
    out['is_last'] = np.bool_(is_last)
    out['is_terminal'] = np.bool_(is_terminal)
    return out


def _converters(space, convert, prefix):
  """Maps each output key to (gym dict key or None, elements.Space, fn)."""
  if isinstance(space, gymnasium.spaces.Dict):
    result = {}
    for name, sub in space.spaces.items():
      # Entries must not shadow the keys that the interface itself uses.
      key = f'{prefix}_{name}' if name in RESERVED else name
      result[key] = (name, *convert(sub)[1:])
    return result
  key, elspace, fn = convert(space)
  return {key: (None, elspace, fn)}


def _obs_conv(space):
  """Returns (default key, elements.Space, fn from gym value to numpy).

  The fns copy, so envs that reuse an obs buffer cannot alter past obs.
  """
  Box, Discrete = gymnasium.spaces.Box, gymnasium.spaces.Discrete
  if isinstance(space, Box) and space.dtype == np.uint8 and (
      len(space.shape) in (2, 3)):
    shape = space.shape if len(space.shape) == 3 else (*space.shape, 1)
    return (
        'image', elements.Space(np.uint8, shape),
        lambda x: np.array(x, np.uint8).reshape(shape))
  if isinstance(space, Box):
    size = int(np.prod(space.shape))
    return (
        'vector', elements.Space(np.float32, (size,)),
        lambda x: np.array(x, np.float32).reshape(size))
  if isinstance(space, Discrete):
    eye = np.eye(int(space.n), dtype=np.float32)
    start = int(space.start)
    return (
        'vector', elements.Space(np.float32, (int(space.n),), 0, 1),
        lambda x: eye[int(x) - start].copy())
  if isinstance(space, gymnasium.spaces.MultiBinary):
    size = int(np.prod(space.shape))
    return (
        'vector', elements.Space(np.float32, (size,), 0, 1),
        lambda x: np.array(x, np.float32).reshape(size))
  raise NotImplementedError(f'Unsupported gymnasium observation space: {space}')


def _act_conv(space):
  """Returns (default key, elements.Space, fn from numpy to gym value)."""
  Box, Discrete = gymnasium.spaces.Box, gymnasium.spaces.Discrete
  if isinstance(space, Discrete):
    start = int(space.start)
    return (
        'action', elements.Space(np.int32, (), 0, int(space.n)),
        lambda x: int(x) + start)
  if isinstance(space, Box):
    dtype, shape = space.dtype, space.shape
    return (
        'action', elements.Space(np.float32, shape, space.low, space.high),
        lambda x: np.asarray(x, dtype).reshape(shape))
  if isinstance(space, gymnasium.spaces.MultiDiscrete):
    start = np.asarray(space.start)
    return (
        'action', elements.Space(np.int32, space.shape, 0, space.nvec),
        lambda x: (np.asarray(x) + start).astype(space.dtype))
  raise NotImplementedError(f'Unsupported gymnasium action space: {space}')
