"""PinPad played by hand: a planner over the ASCII maps that finds the agent
in the image, sequence rewards, time limit, spaces, seeding. Also the suites
whose packages have no installable wheel here."""

import collections

import numpy as np
import pytest

from embodied import envs
from embodied.core import wrappers
from embodied.envs import pinpad

NOOP, UP, DOWN, LEFT, RIGHT = range(5)
STEPS = {UP: (-1, 0), DOWN: (1, 0), LEFT: (0, -1), RIGHT: (0, 1)}
PADS = {'three': 3, 'four': 4, 'five': 5, 'six': 6}


def cells(layout):
  """Map characters by (row, column), read from the ASCII map."""
  rows = layout.strip('\n').split('\n')
  return {(y, x): c for y, row in enumerate(rows) for x, c in enumerate(row)}


def agent_cell(image):
  """The one 4x4 cell that is white-ish in every pixel."""
  blocks = image.reshape(16, 4, 16, 4, 3).transpose(0, 2, 1, 3, 4)
  white = (blocks.reshape(16, 16, -1) > 200).all(-1)
  found = np.argwhere(white)
  assert len(found) == 1, found
  return tuple(int(v) for v in found[0])


def path(grid, start, pad):
  """Shortest moves from start onto `pad`, crossing only floor."""
  parents = {start: None}
  queue = collections.deque([start])
  while queue:
    cell = queue.popleft()
    if grid[cell] == pad:
      moves = []
      while parents[cell]:
        cell, move = parents[cell]
        moves.append(move)
      return moves[::-1]
    for move, (dy, dx) in STEPS.items():
      nxt = (cell[0] + dy, cell[1] + dx)
      if nxt not in parents and grid[nxt] in ('.', pad):
        parents[nxt] = (cell, move)
        queue.append(nxt)
  raise AssertionError(f'pad {pad} unreachable from {start}')


def play(env, grid, obs, pads):
  """Walks onto each pad in turn; the rewards of all steps, per pad."""
  rewards = []
  for pad in pads:
    moves = path(grid, agent_cell(obs['image']), str(pad))
    assert moves
    rewards.append([])
    for move in moves:
      obs = env.step({'reset': False, 'action': np.int32(move)})
      rewards[-1].append(float(obs['reward']))
  return obs, rewards


@pytest.mark.parametrize('layout', list(PADS))
def test_sequence_pays_ten_on_completion(layout):
  env = wrappers.CheckSpaces(envs.make(f'pinpad_{layout}', seed=1))
  grid = cells(pinpad.LAYOUTS[layout])
  count = PADS[layout]
  assert {c for c in grid.values() if c.isdigit()} == {
      str(k) for k in range(1, count + 1)}
  obs = env.step({'reset': True})
  assert grid[agent_cell(obs['image'])] == '.'
  for _ in range(2):  # The sequence starts over after each completion.
    obs, rewards = play(env, grid, obs, range(1, count + 1))
    flat = sum(rewards, [])
    assert flat[-1] == 10 and sum(flat) == 10
  assert not obs['is_last'] and not obs['is_terminal']


def test_wrong_order_pays_nothing():
  env = envs.make('pinpad_four', seed=2)
  grid = cells(pinpad.LAYOUTS['four'])
  obs = env.step({'reset': True})
  # Skipping a pad, going back, and a wrong pad after a good start.
  obs, rewards = play(env, grid, obs, [2, 1, 3, 1, 2, 4, 1, 2, 3, 2, 1])
  assert sum(sum(r) for r in rewards) == 0
  # Pressing the first pad mid-sequence restarts the sequence there.
  obs, rewards = play(env, grid, obs, [2, 3, 4])
  flat = sum(rewards, [])
  assert flat[-1] == 10 and sum(flat) == 10


def test_progress_is_drawn():
  """Pads of the partial sequence are lit; a wrong pad unlights them."""
  env = envs.make('pinpad_three', seed=0)
  grid = cells(pinpad.LAYOUTS['three'])

  def brightness(image, pad):
    return [int(image[4 * y, 4 * x].sum())
            for (y, x), c in grid.items() if c == str(pad)]

  obs = env.step({'reset': True})
  dim = {pad: brightness(obs['image'], pad) for pad in (1, 2, 3)}
  obs, _ = play(env, grid, obs, [1])
  assert min(brightness(obs['image'], 1)) > max(dim[1])
  assert brightness(obs['image'], 3) == dim[3]
  obs, _ = play(env, grid, obs, [3])
  assert brightness(obs['image'], 1) == dim[1]


def test_time_limit_is_last_not_terminal():
  env = wrappers.CheckSpaces(envs.make('pinpad_five', seed=0))
  rng = np.random.default_rng(0)
  obs = env.step({'reset': True})
  steps = 0
  while not obs['is_last']:
    obs = env.step({'reset': False, 'action': np.int32(rng.integers(5))})
    steps += 1
    assert not obs['is_terminal'] and steps <= 2000
    assert not obs['is_first']
  assert steps == 2000
  obs = env.step({'reset': False, 'action': np.int32(0)})
  assert obs['is_first'] and not obs['is_last'] and obs['reward'] == 0
  short = envs.make('pinpad_three', episode_length=3)
  flags = [short.step({'reset': i == 0, 'action': np.int32(0)})['is_last']
           for i in range(5)]
  assert flags == [False, False, False, True, False]


def test_spaces_and_resize():
  env = envs.make('pinpad_six', size=(32, 48))
  assert env.obs_space['image'].shape == (32, 48, 3)
  assert env.obs_space['image'].dtype == np.uint8
  action = env.act_space['action']
  assert (action.dtype, action.shape, action.low, action.high) == (
      np.int32, (), 0, 5)
  obs = env.step({'reset': True})
  assert obs['image'].shape == (32, 48, 3) and obs['is_first']
  native = envs.make('pinpad_six').step({'reset': True})['image']
  assert native.shape == (64, 64, 3)


def test_walls_block_and_noop_stays():
  env = envs.make('pinpad_three', seed=4)
  grid = cells(pinpad.LAYOUTS['three'])
  obs = env.step({'reset': True})
  start = agent_cell(obs['image'])
  obs = env.step({'reset': False, 'action': np.int32(NOOP)})
  assert agent_cell(obs['image']) == start
  for _ in range(20):  # Far more than the grid's width.
    obs = env.step({'reset': False, 'action': np.int32(LEFT)})
  y, x = agent_cell(obs['image'])
  assert grid[(y, x - 1)] == '#'


def test_seed_fixes_start_cells():
  def starts(seed):
    env = envs.make('pinpad_four', seed=seed)
    return [agent_cell(env.step({'reset': True})['image']) for _ in range(6)]
  assert starts(3) == starts(3)
  assert starts(3) != starts(4)
  assert len(set(starts(3))) > 1  # Each episode draws a new start.


def test_unknown_task_and_options():
  with pytest.raises(envs.UnknownTaskError, match='pinpad_three'):
    envs.make('pinpad_seven')
  with pytest.raises(envs.OptionError, match='env.pinpad.length'):
    envs.make('pinpad_three', length_steps=3)
  with pytest.raises(envs.OptionError, match='episode_length'):
    envs.make('pinpad_three', episode_length=0)


# Suites of the reference code without an installable package here.

@pytest.mark.parametrize('task, package', [
    ('procgen_coinrun', 'procgen'),
    ('dmlab_rooms_collect_good_objects_train', 'deepmind-lab'),
    ('minecraft_diamond', 'minerl'),
])
def test_unavailable_suites_name_their_package(task, package, tmp_path):
  with pytest.raises(envs.MissingPackageError) as info:
    envs.make(task)
  message = str(info.value)
  assert f"'{task}' needs {package}" in message
  assert 'cannot be installed here' in message and '\n' not in message
  # Through main.py: one line, exit 2, nothing written.
  from dreamerv3 import main
  with pytest.raises(main.ConfigError, match=package):
    main.main(['--task', task, '--logdir', str(tmp_path / 'run')])
  assert not (tmp_path / 'run').exists()
