"""The environment interface that the driver, replay and agent rely on."""

import elements
import numpy as np


def step_spaces():
  """The obs keys every env reports besides its observations."""
  return {
      'reward': elements.Space(np.float32),
      'is_first': elements.Space(bool),
      'is_last': elements.Space(bool),
      'is_terminal': elements.Space(bool),
  }


def discrete_act_space(n):
  """act_space of an env with one discrete action in [0, n)."""
  return {
      'action': elements.Space(np.int32, (), 0, n),
      'reset': elements.Space(bool),
  }


class Env:
  """A single environment with dict observations and dict actions.

  obs_space must include 'reward' (float32), 'is_first', 'is_last' and
  'is_terminal' (bool). act_space must include 'reset' (bool).

  step(action) returns a dict of numpy values. When action['reset'] is true,
  on the very first call, or after an episode ended, the env resets, ignores
  the other action keys and returns the first obs of a new episode
  (is_first=True, reward=0). is_last marks the final step of an episode for
  any reason; is_terminal only a true termination, not a time limit.
  """

  def __repr__(self):
    return f'{type(self).__name__}(obs={self.obs_space}, act={self.act_space})'

  @property
  def unwrapped(self):
    return self

  @property
  def obs_space(self):
    raise NotImplementedError

  @property
  def act_space(self):
    raise NotImplementedError

  def step(self, action):
    raise NotImplementedError

  def close(self):
    pass


class Wrapper(Env):
  """Forwards everything to the inner env; subclasses override what they change."""

  def __init__(self, env):
    self.env = env

  def __getattr__(self, name):
    # Dunder lookups and 'env' itself must fail normally, otherwise copying or
    # unpickling a half-built wrapper recurses forever.
    if name.startswith('__') or name == 'env':
      raise AttributeError(name)
    return getattr(self.env, name)

  def __repr__(self):
    return f'{type(self).__name__}({self.env!r})'

  @property
  def unwrapped(self):
    return self.env.unwrapped

  @property
  def obs_space(self):
    return self.env.obs_space

  @property
  def act_space(self):
    return self.env.act_space

  def step(self, action):
    return self.env.step(action)

  def close(self):
    return self.env.close()
