"""PinPad as pinpad_<layout>: pinpad_three, _four, _five and _six.

A grid world with coloured pads (the visual pin pad of the Director and
DreamerV3 papers, implemented here from their description). The agent, a
white square, moves one cell per step (5 actions: noop, up, down, left,
right; walls block) and has to step onto the pads in the order 1, 2, ..., n.
Entering a pad's cells from outside that pad presses it: the next pad in
the order advances the sequence, the first pad restarts it, any other pad
clears it. Completing the sequence gives reward +10 and clears it, so it can
be completed again. Pads of the current partial sequence are drawn lit, so
the image shows the progress. Episodes last `episode_length` steps (2000)
and end by time limit: is_last without is_terminal.

The 'image' is 64x64 RGB (16x16 cells of 4 pixels); envs.make resizes it to
env.size. The start cell of each episode is drawn from the free floor cells
with a generator seeded by `seed`, so a seed fixes the whole run.
"""

import elements
import numpy as np

from . import OptionError, UnknownTaskError
from ..core import base

OPTIONS = {'episode_length': 2000}
RANGES = ((r'env\.pinpad\.episode_length', 'int', 1, None),)
REWARD = 10.0
CELL = 4  # Pixels per grid cell: 16 cells make the 64 pixel image.

# '#' wall, '.' floor, digits the pads in the order they must be pressed.
LAYOUTS = {
    'three': """
################
#111........222#
#111........222#
#111........222#
#..............#
#..............#
#..............#
#..............#
#..............#
#..............#
#..............#
#..............#
#.....3333.....#
#.....3333.....#
#.....3333.....#
################
""",
    'four': """
################
#111........444#
#111........444#
#111........444#
#..............#
#..............#
#..............#
#..............#
#..............#
#..............#
#..............#
#..............#
#333........222#
#333........222#
#333........222#
################
""",
    'five': """
################
#111........444#
#111........444#
#111........444#
#..............#
#..............#
#.....5555.....#
#.....5555.....#
#.....5555.....#
#..............#
#..............#
#..............#
#333........222#
#333........222#
#333........222#
################
""",
    'six': """
################
#111...55...444#
#111...55...444#
#111........444#
#..............#
#..............#
#66..........66#
#66..........66#
#66..........66#
#..............#
#..............#
#..............#
#333........222#
#333........222#
#333........222#
################
""",
}

# Pad colours (lit); unlit pads are drawn at half brightness.
COLORS = np.array([
    (230, 40, 40), (40, 200, 40), (50, 90, 240),
    (230, 210, 30), (210, 50, 210), (40, 210, 210)], np.uint8)
WALL = (110, 110, 110)
AGENT = (245, 245, 245)
# Row and column change of actions noop, up, down, left, right.
MOVES = np.array([(0, 0), (-1, 0), (1, 0), (0, -1), (0, 1)])


def parse(layout):
  """ASCII map -> int grid: -1 wall, 0 floor, k > 0 pad k."""
  rows = layout.strip('\n').split('\n')
  if len({len(r) for r in rows}) != 1:
    raise ValueError('PinPad layout rows differ in length')
  table = {'#': -1, '.': 0}
  table.update({str(k): k for k in range(1, len(COLORS) + 1)})
  return np.array([[table[c] for c in row] for row in rows], np.int64)


def make(name, *, seed=0, size=None, **kwargs):
  del size  # Drawn at 64x64; the standard wrapper resizes.
  if name not in LAYOUTS:
    raise UnknownTaskError(
        f"Unknown task 'pinpad_{name}': pinpad has "
        f"{', '.join('pinpad_' + k for k in LAYOUTS)}")
  unknown = sorted(set(kwargs) - set(OPTIONS))
  if unknown:
    raise OptionError(
        f"Unknown option env.pinpad.{unknown[0]}: pinpad takes "
        f"{', '.join(OPTIONS)}")
  options = {**OPTIONS, **kwargs}
  length = options['episode_length']
  if not isinstance(length, int) or isinstance(length, bool) or length < 1:
    raise OptionError(
        f'env.pinpad.episode_length must be an integer >= 1, got {length!r}')
  return PinPad(LAYOUTS[name], seed=seed, episode_length=length)


class PinPad(base.Env):

  def __init__(self, layout, seed=0, episode_length=2000):
    self._grid = parse(layout)
    self._pads = int(self._grid.max())
    if self._pads < 1 or set(np.unique(self._grid[self._grid > 0])) != set(
        range(1, self._pads + 1)):
      raise ValueError('PinPad layout needs pads numbered 1..n')
    self._floor = np.argwhere(self._grid == 0)
    self._length = episode_length
    self._rng = np.random.default_rng(seed)
    self._background = self._draw_background()
    self._pos = None
    self._progress = 0  # Pads of the sequence pressed so far.
    self._step = 0
    self._done = True

  @property
  def obs_space(self):
    height, width = self._grid.shape
    return {
        'image': elements.Space(np.uint8, (height * CELL, width * CELL, 3)),
        **base.step_spaces(),
    }

  @property
  def act_space(self):
    return base.discrete_act_space(len(MOVES))

  @property
  def position(self):
    """The agent's (row, column) cell."""
    return tuple(int(x) for x in self._pos)

  @property
  def progress(self):
    """How many pads of the sequence have been pressed so far."""
    return self._progress

  def step(self, action):
    if action['reset'] or self._done:
      self._done = False
      self._step = 0
      self._progress = 0
      self._pos = self._floor[self._rng.integers(len(self._floor))].copy()
      return self._obs(0.0, is_first=True)
    target = self._pos + MOVES[int(action['action'])]
    before = self._grid[tuple(self._pos)]
    after = self._grid[tuple(target)]
    reward = 0.0
    if after >= 0:
      self._pos = target
      if after > 0 and after != before:
        reward = self._press(after)
    self._step += 1
    self._done = self._step >= self._length
    return self._obs(reward, is_last=self._done)

  def _press(self, pad):
    if pad == self._progress + 1:
      self._progress += 1
    else:
      self._progress = int(pad == 1)
    if self._progress == self._pads:
      self._progress = 0
      return REWARD
    return 0.0

  def _obs(self, reward, is_first=False, is_last=False):
    return {
        'image': self._render(),
        'reward': np.float32(reward),
        'is_first': np.bool_(is_first),
        'is_last': np.bool_(is_last),
        'is_terminal': np.bool_(False),
    }

  def _draw_background(self):
    grid = np.zeros((*self._grid.shape, 3), np.uint8)
    grid[self._grid == -1] = WALL
    for pad in range(1, self._pads + 1):
      grid[self._grid == pad] = COLORS[pad - 1] // 2
    return grid

  def _render(self):
    grid = self._background.copy()
    for pad in range(1, self._progress + 1):
      grid[self._grid == pad] = COLORS[pad - 1]
    grid[tuple(self._pos)] = AGENT
    return grid.repeat(CELL, 0).repeat(CELL, 1)
