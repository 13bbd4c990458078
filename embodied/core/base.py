"""The environment interface that the driver, replay and agent rely on."""

import elements
import numpy as np

from .axis import MemberAxis


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


class Agent:
  """What the run loops use of an agent, stated once (the jitted JAX agent,
  embodied/jax/agent.py, implements it). With several seeds trained as one
  program, batches, observations, actions, outputs and metrics carry a
  leading member axis (`axis`). Defaults are those of one agent without the
  optional parts."""

  axis = MemberAxis()  # The member layout: one seed, no axis.
  hosts = ()      # Host state (extension schedules) per member, or none.
  ext_space = {}  # Per-step keys the train step writes back into replay.
  mesh = None     # The train devices batches are split over, or None.

  def init_policy(self, batch_size):
    raise NotImplementedError

  def policy(self, carry, obs, mode='train'):
    """-> (carry, actions, outputs) as NumPy; mode train or eval."""
    raise NotImplementedError

  def train(self, data):
    """One update on a replay batch -> (outs, metrics) as NumPy; outs may
    hold 'replay' (values to write back) and the extensions' outputs."""
    raise NotImplementedError

  def put(self, data):
    """Starts moving a batch to where train() runs; returns it."""
    return data

  def train_async(self, data):
    """train() that may return before the update is done (fetch() waits)."""
    return self.train(data)

  def fetch(self, tree):
    return tree

  def report(self, data):
    """Metrics (and videos) of a batch that is not trained on."""
    return {}

  def host_work(self, replay, prepare):
    """Host-side work in the train loop: objects with outputs(outs),
    updated(updates) and stats()."""
    return []

  def agree(self, *flags):
    """Loop decisions every process of a job must share (stop, save)."""
    return flags

  def save(self):
    raise NotImplementedError

  def load(self, data):
    raise NotImplementedError
