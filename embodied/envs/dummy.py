"""Fast deterministic envs with a learnable reward, for tests and smoke runs.
dummy_block (class Block) is a moving block for open-loop video tests.

Every obs shows a target action: one-hot (disc) or coordinates (cont) in
'vector', and a bright band (disc) or square (cont) in 'image'. The next
step's reward scores the action against that target: 1 for a match else 0
(disc), minus the Euclidean distance (cont). So a random policy gets about
1/actions per step on disc and an optimal one gets 1 on every step after the
first. Episodes end with is_terminal after `episode_length` steps.
`work_ms` makes every step spend that many milliseconds of CPU time (a
busy loop on the thread's CPU clock), standing in for an expensive env
(rendering, physics) in benchmarks.
"""

import time

import elements
import numpy as np

from . import OptionError, UnknownTaskError
from ..core import base

TASKS = ('disc', 'cont', 'vector', 'image', 'block')
RANGES = ((r'env\.dummy\.(episode_length|actions)', 'int', 1, None),
          (r'env\.dummy\.work_ms', 'number', 0, None))


def make(name, *, seed=0, size=(64, 64), **kwargs):
  if name not in TASKS:
    raise UnknownTaskError(
        f"Unknown task 'dummy_{name}': dummy has {', '.join(TASKS)}")
  if name == 'block':
    return Block(size=size, seed=seed, **kwargs)
  return Dummy(name, size=size, seed=seed, **kwargs)


class Block(base.Env):
  """dummy_block: a bright block on a 4x4 grid of cells in a grayscale
  image, moved one cell per step by the action (0 stay, 1 up, 2 down,
  3 left, 4 right; walls stop it). Only the start cell is random, so every
  later frame is a function of the actions: a test of open-loop video
  prediction. Reward 1 on steps that end in the top-left cell."""

  MOVES = ((0, 0), (-1, 0), (1, 0), (0, -1), (0, 1))
  CELLS = 4

  def __init__(self, size=(64, 64), episode_length=100, work_ms=0, seed=0):
    _check_length(episode_length)
    self._work = float(work_ms) / 1000
    self._size = tuple(size)
    self._length = episode_length
    self._rng = np.random.default_rng(seed)
    self._step = 0
    self._done = True
    self._pos = (0, 0)

  @property
  def obs_space(self):
    return {'image': elements.Space(np.uint8, (*self._size, 1)),
            **base.step_spaces()}

  @property
  def act_space(self):
    return {'action': elements.Space(np.int32, (), 0, len(self.MOVES)),
            'reset': elements.Space(bool)}

  def step(self, action):
    _spend(self._work)
    if action['reset'] or self._done:
      self._step = 0
      self._done = False
      self._pos = tuple(int(x) for x in self._rng.integers(0, self.CELLS, 2))
      reward = 0.0
    else:
      dy, dx = self.MOVES[int(action['action'])]
      top = self.CELLS - 1
      self._pos = (min(max(self._pos[0] + dy, 0), top),
                   min(max(self._pos[1] + dx, 0), top))
      reward = float(self._pos == (0, 0))
      self._step += 1
      self._done = self._step >= self._length
    return {
        'image': self.render(self._pos, self._size),
        'reward': np.float32(reward),
        'is_first': np.bool_(self._step == 0),
        'is_last': np.bool_(self._done),
        'is_terminal': np.bool_(self._done)}

  @classmethod
  def render(cls, pos, size):
    height, width = size
    image = np.zeros((height, width, 1), np.uint8)
    ch, cw = height // cls.CELLS, width // cls.CELLS
    image[pos[0] * ch:(pos[0] + 1) * ch, pos[1] * cw:(pos[1] + 1) * cw] = 255
    return image


class Dummy(base.Env):

  def __init__(
      self, task='disc', size=(64, 64), episode_length=100, actions=6,
      work_ms=0, seed=0):
    if task not in TASKS:
      raise UnknownTaskError(
          f"Unknown task 'dummy_{task}': choose from "
          f"{', '.join('dummy_' + t for t in TASKS)}")
    _check_length(episode_length)
    if int(actions) != actions or actions < 1:
      raise OptionError(
          f'env.dummy.actions must be an integer >= 1, got {actions!r}')
    self._discrete = task != 'cont'
    self._image = task != 'vector'
    self._has_vector = task != 'image'  # 'image': pixels only (benchmarks).
    self._size = tuple(size)
    self._length = episode_length
    self._actions = actions
    self._work = float(work_ms) / 1000
    self._rng = np.random.default_rng(seed)
    self._step = 0
    self._done = True  # The first call resets, whatever the action says.
    self._target = None
    # Band edges for drawing the discrete target into the image.
    self._edges = np.linspace(0, self._size[1], actions + 1).astype(int)

  @property
  def obs_space(self):
    # Vector: the target followed by the episode progress in [0, 1].
    width = (self._actions if self._discrete else 2) + 1
    spaces = {}
    if self._image:
      spaces['image'] = elements.Space(np.uint8, (*self._size, 3))
    if self._has_vector:
      spaces['vector'] = elements.Space(np.float32, (width,))
    spaces.update(base.step_spaces())
    return spaces

  @property
  def act_space(self):
    if self._discrete:
      action = elements.Space(np.int32, (), 0, self._actions)
    else:
      action = elements.Space(np.float32, (2,), -1, 1)
    return {'action': action, 'reset': elements.Space(bool)}

  def step(self, action):
    _spend(self._work)
    if action['reset'] or self._done:
      self._step = 0
      self._done = False
      reward = 0.0
    else:
      reward = self._reward(action['action'])
      self._step += 1
      self._done = self._step >= self._length
    if self._discrete:
      self._target = int(self._rng.integers(self._actions))
    else:
      self._target = self._rng.uniform(-1, 1, 2).astype(np.float32)
    obs = {}
    if self._image:
      obs['image'] = self._render()
    if self._has_vector:
      obs['vector'] = self._vector()
    obs['reward'] = np.float32(reward)
    obs['is_first'] = np.bool_(self._step == 0)
    obs['is_last'] = np.bool_(self._done)
    obs['is_terminal'] = np.bool_(self._done)
    return obs

  def _reward(self, action):
    if self._discrete:
      return float(int(action) == self._target)
    return -float(np.linalg.norm(np.asarray(action) - self._target))

  def _vector(self):
    progress = self._step / self._length
    if self._discrete:
      vec = np.zeros(self._actions + 1, np.float32)
      vec[self._target] = 1
    else:
      vec = np.empty(3, np.float32)
      vec[:2] = self._target
    vec[-1] = progress
    return vec

  def _render(self):
    height, width = self._size
    image = np.zeros((height, width, 3), np.uint8)
    if self._discrete:
      lo, hi = self._edges[self._target], self._edges[self._target + 1]
      image[:, lo:hi] = 255
    else:
      side = max(2, min(height, width) // 8)
      x, y = (self._target + 1) / 2
      top = int(round(y * (height - side)))
      left = int(round(x * (width - side)))
      image[top:top + side, left:left + side] = 255
    return image


def _spend(seconds):
  """Busy for `seconds` of this thread's CPU time (work_ms)."""
  end = time.thread_time() + seconds
  while time.thread_time() < end:
    pass


def _check_length(episode_length):
  if int(episode_length) != episode_length or episode_length < 1:
    raise OptionError(
        'env.dummy.episode_length must be an integer >= 1, got '
        f'{episode_length!r}')
