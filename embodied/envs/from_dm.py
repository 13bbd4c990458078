"""One adapter for every dm_env.Environment (DeepMind Control, LocoNav,
BSuite, Memory Maze): a reset on action['reset'] or after the last step,
`repeat` env steps per step with their rewards summed, an optional episode
cap of `length` env steps counted here (0: the env's own), and is_terminal
only where the env ends with discount 0 (a time limit keeps discount 1, so
the value bootstraps through it). Discrete actions (a DiscreteArray spec)
are one int, continuous ones a float vector. Each suite says what it
observes: _spaces() and _observe(timestep)."""

import elements
import numpy as np

from ..core import base


class FromDM(base.Env):

  def __init__(self, env, repeat=1, length=0):
    self._env = env
    self._repeat = int(repeat)
    self._length = int(length)
    self._steps = 0
    self._done = True
    spec = env.action_spec()
    self._discrete = hasattr(spec, 'num_values')
    if self._discrete:
      self._act_space = base.discrete_act_space(int(spec.num_values))
    else:
      self._act_space = {
          'action': elements.Space(
              np.float32, spec.shape, spec.minimum, spec.maximum),
          'reset': elements.Space(bool)}

  @property
  def dm_env(self):
    return self._env

  @property
  def obs_space(self):
    return {**self._spaces(), **base.step_spaces()}

  @property
  def act_space(self):
    return self._act_space

  def step(self, action):
    if action['reset'] or self._done:
      self._done, self._steps = False, 0
      return self._obs(self._env.reset(), 0.0, True, False, False)
    act = action['action']
    act = int(act) if self._discrete else np.asarray(act, np.float64)
    reward = 0.0
    for _ in range(self._repeat):
      timestep = self._env.step(act)
      self._steps += 1
      reward += timestep.reward or 0.0
      if timestep.last() or self._steps == self._length:
        break
    terminal = timestep.last() and timestep.discount == 0
    self._done = timestep.last() or self._steps == self._length
    return self._obs(timestep, reward, False, self._done, terminal)

  def close(self):
    close = getattr(self._env, 'close', None)
    if close:
      close()

  def _obs(self, timestep, reward, is_first, is_last, is_terminal):
    return {**self._observe(timestep), 'reward': np.float32(reward),
            'is_first': np.bool_(is_first), 'is_last': np.bool_(is_last),
            'is_terminal': np.bool_(is_terminal)}

  def _spaces(self):
    raise NotImplementedError

  def _observe(self, timestep):
    raise NotImplementedError
