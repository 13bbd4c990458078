"""Memory Maze against the memory_maze package's own dm_env tasks: spaces,
the same images and rewards for the same seed and actions, the time limit as
a truncation, and the missing-package errors."""

import importlib.util
import sys

import numpy as np
import pytest

from embodied import envs
from embodied.core import wrappers

pytest.importorskip('dm_control')
if importlib.util.find_spec('memory_maze') is None:
  # Not imported here: memory_maze sets MUJOCO_GL itself on import.
  pytest.skip('memory-maze is not installed', allow_module_level=True)

SEED = 5


@pytest.fixture(scope='module')
def pair():
  """Our env and the package's own task with the same seed."""
  try:
    ours = envs.make('memmaze_9x9', seed=SEED)
  except envs.MissingPackageError as e:
    pytest.skip(f'memmaze unavailable here: {e}')
  from memory_maze import tasks
  return ours, tasks.memory_maze_9x9(seed=SEED, image_only_obs=True)


def test_matches_package_and_spaces(pair):
  ours, raw = pair
  env = wrappers.CheckSpaces(ours)
  assert env.obs_space['image'].shape == (64, 64, 3)
  assert env.obs_space['image'].dtype == np.uint8
  action = env.act_space['action']
  assert (action.dtype, action.shape, action.low, action.high) == (
      np.int32, (), 0, 6)
  obs = env.step({'reset': True})
  timestep = raw.reset()
  assert obs['is_first'] and obs['reward'] == 0
  np.testing.assert_array_equal(obs['image'], timestep.observation)
  assert obs['image'].std() > 0
  rng = np.random.default_rng(0)
  for act in rng.integers(0, 6, 8):
    obs = env.step({'reset': False, 'action': np.int32(act)})
    timestep = raw.step(int(act))
    np.testing.assert_array_equal(obs['image'], timestep.observation)
    assert obs['reward'] == np.float32(timestep.reward)
    assert obs['reward'] in (0, 1)
    assert not obs['is_first'] and not obs['is_last']
    assert not obs['is_terminal']


def test_time_limit_is_last_not_terminal(pair):
  del pair  # Rendering works (else skipped).
  from embodied.envs import memmaze
  from memory_maze import tasks
  # The 9x9 task with a 2 s limit: 8 steps at the package's 4 Hz.
  env = memmaze.MemoryMaze(tasks._memory_maze(
      9, 3, 2.0, seed=0, image_only_obs=True))
  obs = env.step({'reset': True})
  steps = 0
  while not obs['is_last']:
    obs = env.step({'reset': False, 'action': np.int32(1)})
    steps += 1
    assert not obs['is_terminal'] and steps <= 8
  assert steps == 8
  obs = env.step({'reset': False, 'action': np.int32(1)})
  assert obs['is_first'] and not obs['is_last']


def test_unknown_task_and_options():
  with pytest.raises(envs.UnknownTaskError, match='memmaze_9x9'):
    envs.make('memmaze_7x7')
  with pytest.raises(envs.OptionError, match='env.memmaze.repeat'):
    envs.make('memmaze_9x9', repeat=2)


def test_missing_packages(monkeypatch):
  monkeypatch.setitem(sys.modules, 'memory_maze', None)
  with pytest.raises(envs.MissingPackageError) as info:
    envs.make('memmaze_9x9')
  message = str(info.value)
  assert message.startswith('memmaze tasks need memory-maze')
  assert 'pip install -r requirements-envs.txt' in message
  assert '\n' not in message
  # memory_maze itself fails to import without gym.
  monkeypatch.delitem(sys.modules, 'memory_maze')
  monkeypatch.setitem(sys.modules, 'gym', None)
  with pytest.raises(envs.MissingPackageError, match='gym'):
    envs.make('memmaze_9x9')


def test_no_renderer_is_one_line_error(monkeypatch):

  def fails(image=True):
    raise envs.MissingPackageError('no GL')

  from embodied.envs import dmc
  monkeypatch.setattr(dmc, 'select_renderer', fails)
  with pytest.raises(envs.MissingPackageError) as info:
    envs.make('memmaze_9x9')
  message = str(info.value)
  assert 'apt-get install libegl1 or libosmesa6' in message
  assert '\n' not in message
