"""Crafter (Hafner 2021) as crafter_reward and crafter_noreward.

RGB image at the configured size (Crafter renders it directly; below 18
pixels it renders 64x64 and envs.make resizes), 17 discrete actions. Death is is_terminal; the episode cap (env.crafter.episode_length,
10000 steps) is is_last only. crafter_noreward gives reward 0; the task
reward then still shows up as log/return.

Per-episode figures go out as log/* keys that are NaN on every step but the
last, where the run loop's Episodes logger (which skips NaN) picks them up:
- log/achievement_<name>: 1 if the episode unlocked it, else 0, so
  episode/achievement_<name>_mean is that episode's success (0/1).
- log/crafter_score: the Crafter score over all episodes this env instance
  has finished so far, a running estimate of the benchmark number for the
  run (one per env worker; scripts/scores.py --crafter pools all episodes).
- log/return: the episode's sum of the task reward.
Cut episodes with env.crafter.episode_length, not env.length: the env must
see the episode end to report them.
"""

import elements
import numpy as np

from . import MissingPackageError, OptionError, UnknownTaskError
from ..core import base

TASKS = ('reward', 'noreward')
OPTIONS = {'episode_length': 10000, 'logs': True}
RANGES = ((r'env\.crafter\.episode_length', 'int', 1, None),)

# The 22 achievements of Crafter 1.x, as in crafter.constants.achievements.
ACHIEVEMENTS = (
    'collect_coal', 'collect_diamond', 'collect_drink', 'collect_iron',
    'collect_sapling', 'collect_stone', 'collect_wood', 'defeat_skeleton',
    'defeat_zombie', 'eat_cow', 'eat_plant', 'make_iron_pickaxe',
    'make_iron_sword', 'make_stone_pickaxe', 'make_stone_sword',
    'make_wood_pickaxe', 'make_wood_sword', 'place_furnace', 'place_plant',
    'place_stone', 'place_table', 'wake_up')


def crafter_score(success_rates):
  """Crafter score (Hafner 2021) in percent: exp(mean_i ln(1 + s_i)) - 1.

  success_rates: per-achievement success rates in percent (0..100), as a
  sequence or a dict name -> rate; the benchmark uses all 22 achievements.
  """
  if isinstance(success_rates, dict):
    success_rates = list(success_rates.values())
  rates = np.asarray(success_rates, np.float64).reshape(-1)
  if not rates.size:
    raise ValueError('crafter_score needs at least one success rate')
  if np.isnan(rates).any() or (rates < 0).any() or (rates > 100).any():
    raise ValueError(
        f'crafter_score needs success rates in percent (0..100), got {rates}')
  return float(np.exp(np.mean(np.log1p(rates))) - 1)


def make(name, *, seed=0, size=(64, 64), **kwargs):
  if name not in TASKS:
    raise UnknownTaskError(
        f"Unknown task 'crafter_{name}': crafter has "
        f"{', '.join('crafter_' + t for t in TASKS)}")
  unknown = sorted(set(kwargs) - set(OPTIONS))
  if unknown:
    raise OptionError(
        f"Unknown option env.crafter.{unknown[0]}: crafter takes "
        f"{', '.join(OPTIONS)}")
  options = {**OPTIONS, **kwargs}
  if not isinstance(options['episode_length'], int) or (
      options['episode_length'] < 1):
    raise OptionError(
        f'env.crafter.episode_length must be an integer >= 1, got '
        f"{options['episode_length']!r}")
  if len(size) != 2 or min(size) < 1:
    raise OptionError(f'env.size must be (height, width), got {size!r}')
  return Crafter(
      reward=(name == 'reward'), seed=seed, size=size, **options)


def _import():
  try:
    import crafter
  except ImportError as e:
    raise MissingPackageError(
        f'crafter tasks need the crafter package ({e}): '
        'pip install -r requirements.txt') from None
  return crafter


class Crafter(base.Env):

  def __init__(
      self, reward=True, seed=0, size=(64, 64), episode_length=10000,
      logs=True):
    crafter = _import()
    self._size = tuple(int(x) for x in size)
    if min(self._size) < 18:
      # Crafter cannot draw below 18 pixels; envs.make resizes the image.
      self._size = (64, 64)
    # Crafter takes the render size as (width, height).
    self._env = crafter.Env(
        size=self._size[::-1], reward=reward, length=episode_length,
        seed=seed)
    self._logs = logs
    self._done = True
    self._return = 0.0
    # Episodes in which each achievement was unlocked, over this instance.
    self._unlocks = np.zeros(len(ACHIEVEMENTS), np.int64)
    self._episodes = 0
    self._nan = np.float32(np.nan)

  @property
  def obs_space(self):
    spaces = {
        'image': elements.Space(np.uint8, (*self._size, 3)),
        **base.step_spaces(),
    }
    if self._logs:
      for name in ACHIEVEMENTS:
        spaces[f'log/achievement_{name}'] = elements.Space(np.float32)
      spaces['log/crafter_score'] = elements.Space(np.float32)
      spaces['log/return'] = elements.Space(np.float32)
    return spaces

  @property
  def act_space(self):
    return base.discrete_act_space(17)

  @property
  def success_rates(self):
    """Percent of this instance's finished episodes that unlocked each."""
    rates = 100 * self._unlocks / max(1, self._episodes)
    return dict(zip(ACHIEVEMENTS, rates.tolist()))

  def step(self, action):
    if action['reset'] or self._done:
      self._done = False
      self._return = 0.0
      image = self._env.reset()
      return self._obs(image, 0.0, True, False, False)
    image, reward, done, info = self._env.step(int(action['action']))
    self._done = bool(done)
    self._return += float(info['reward'])
    terminal = info['discount'] == 0
    return self._obs(image, reward, False, self._done, terminal, info)

  def _obs(self, image, reward, is_first, is_last, is_terminal, info=None):
    obs = {
        'image': image,
        'reward': np.float32(reward),
        'is_first': np.bool_(is_first),
        'is_last': np.bool_(is_last),
        'is_terminal': np.bool_(is_terminal),
    }
    if not self._logs:
      return obs
    if is_last:
      counts = info['achievements']
      unlocked = np.array([counts[n] > 0 for n in ACHIEVEMENTS])
      self._unlocks += unlocked
      self._episodes += 1
      for name, value in zip(ACHIEVEMENTS, unlocked):
        obs[f'log/achievement_{name}'] = np.float32(value)
      score = crafter_score(list(self.success_rates.values()))
      obs['log/crafter_score'] = np.float32(score)
      obs['log/return'] = np.float32(self._return)
    else:
      for name in ACHIEVEMENTS:
        obs[f'log/achievement_{name}'] = self._nan
      obs['log/crafter_score'] = self._nan
      obs['log/return'] = self._nan
    return obs

  def close(self):
    pass
