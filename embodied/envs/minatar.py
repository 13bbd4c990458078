"""MinAtar games: minatar_<game> and minatar_pomdp_<game>.

Games: breakout, asterix, freeway, seaquest, space_invaders. The 'image' is
the game's binary 10x10xC state as uint8 with values 0 and 255, so that the
agent's pixel scaling (x / 255) sees full contrast; a config that keeps it at
10x10 sets env.size to [10, 10] (the minatar preset does), otherwise the
standard wrapper resizes it.

The pomdp variant removes the channels that encode motion history, so the
agent has to infer directions and speeds from memory: the 'trail' channel of
breakout, asterix and seaquest, freeway's speed1..speed5 car trails (which
give direction and speed) and space_invaders' alien_left/alien_right
direction channels.

Options (config.env.minatar): sticky, the probability that the game repeats
the previous action instead of the chosen one (MinAtar's default 0.1);
ramping, MinAtar's difficulty ramping; actions, 'all' for the 6 MinAtar
actions or 'needed' for the game's minimal set. Episodes end when the game
terminates (freeway after 2500 frames, as MinAtar counts it, so it reads as
is_terminal); env.length adds a time limit.
"""

import elements
import numpy as np

from . import MissingPackageError, OptionError, UnknownTaskError
from ..core import base

# Game -> channels that encode motion history, by MinAtar's channel names.
TRAILS = {
    'breakout': ('trail',),
    'asterix': ('trail',),
    'freeway': ('speed1', 'speed2', 'speed3', 'speed4', 'speed5'),
    'seaquest': ('trail',),
    'space_invaders': ('alien_left', 'alien_right'),
}
GAMES = tuple(TRAILS)
ACTIONS = ('all', 'needed')
SHAPE_OPTIONS = ('actions',)  # A run cannot resume with another value.
RANGES = ((r'env\.minatar\.sticky', 'number', 0, 1),)


def make(name, *, seed=0, size=None, **kwargs):
  del size  # The game is 10x10; the standard wrapper resizes if asked.
  pomdp = name.startswith('pomdp_')
  game = name[len('pomdp_'):] if pomdp else name
  if game not in GAMES:
    tasks = [f'minatar_{g}' for g in GAMES] + [f'minatar_pomdp_{GAMES[0]}']
    raise UnknownTaskError(
        f"Unknown task 'minatar_{name}': MinAtar has {', '.join(GAMES)}, "
        f"e.g. {', '.join(tasks)}")
  try:
    import minatar  # noqa: F401
  except ImportError:
    raise MissingPackageError(
        f"Task 'minatar_{name}' needs the minatar package: "
        'pip install minatar==1.0.15') from None
  return MinAtar(game, pomdp=pomdp, seed=seed, **kwargs)


class MinAtar(base.Env):

  def __init__(
      self, game, pomdp=False, sticky=0.1, ramping=True, actions='all',
      seed=0):
    import minatar
    if actions not in ACTIONS:
      raise OptionError(
          f"env.minatar.actions must be one of {', '.join(ACTIONS)}, "
          f'got {actions!r}')
    if not 0 <= sticky <= 1:
      raise OptionError(
          f'env.minatar.sticky must be a probability in [0, 1], got {sticky!r}')
    self._game = game
    self._env = minatar.Environment(
        game, sticky_action_prob=float(sticky),
        difficulty_ramping=bool(ramping))
    self._env.seed(int(np.random.default_rng(seed).integers(2 ** 31)))
    channels = self._env.env.channels  # Name -> index, from the package.
    drop = {channels[name] for name in TRAILS[game]} if pomdp else set()
    self._keep = np.array(
        [i for i in range(len(channels)) if i not in drop], np.intp)
    names = {i: n for n, i in channels.items()}
    self._channels = tuple(names[i] for i in self._keep)
    self._actions = (
        list(range(self._env.num_actions())) if actions == 'all'
        else list(self._env.minimal_action_set()))
    self._done = True
    # Built once: an elements.Space takes ~0.5 ms to create.
    self._obs_space = {
        'image': elements.Space(np.uint8, (10, 10, len(self._keep))),
        **base.step_spaces(),
    }
    self._act_space = base.discrete_act_space(len(self._actions))

  @property
  def channels(self):
    """Names of the image channels in order."""
    return self._channels

  @property
  def obs_space(self):
    return dict(self._obs_space)

  @property
  def act_space(self):
    return dict(self._act_space)

  def step(self, action):
    if action['reset'] or self._done:
      self._env.reset()
      self._done = False
      return self._obs(0.0, True, False)
    reward, terminal = self._env.act(self._actions[int(action['action'])])
    self._done = bool(terminal)
    return self._obs(reward, False, self._done)

  def _obs(self, reward, is_first, is_terminal):
    state = self._env.state()[:, :, self._keep]
    return {
        'image': state.astype(np.uint8) * np.uint8(255),
        'reward': np.float32(reward),
        'is_first': np.bool_(is_first),
        'is_last': np.bool_(is_terminal),
        'is_terminal': np.bool_(is_terminal),
    }
