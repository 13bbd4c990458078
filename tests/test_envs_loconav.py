"""LocoNav against dm_control's locomotion maze tasks: spaces, images against
rendering the camera directly, action repeat against stepping dm_control by
hand, the target reward, the time limit and the missing-package errors."""

import sys

import numpy as np
import pytest

from embodied import envs
from embodied.core import wrappers

pytest.importorskip('dm_control')


@pytest.fixture(scope='module')
def rendering():
  """Skips where labmaze or headless OpenGL is missing."""
  try:
    envs.make('loconav_ant_maze_s', size=(8, 8)).close()
  except envs.MissingPackageError as e:
    pytest.skip(f'loconav unavailable here: {e}')


def actions(count, dims, seed=0):
  return np.random.default_rng(seed).uniform(
      -1, 1, (count, dims)).astype(np.float32)


def test_spaces_and_random_steps(rendering):
  del rendering
  env = wrappers.CheckSpaces(envs.make(
      'loconav_ant_maze_m', seed=1, size=(48, 64)))
  spaces = env.obs_space
  assert spaces['image'].shape == (48, 64, 3)
  assert spaces['image'].dtype == np.uint8
  # The ant's proprioception, without the 'walker/' prefix.
  assert spaces['joints_pos'].shape == (8,)
  assert spaces['joints_vel'].shape == (8,)
  assert spaces['sensors_gyro'].shape == (3,)
  assert 'sensors_force' not in spaces  # Empty on the ant.
  for key, space in spaces.items():
    if key != 'image' and key not in ('is_first', 'is_last', 'is_terminal'):
      assert space.dtype == np.float32, key
  act = env.act_space['action']
  assert act.dtype == np.float32 and act.shape == (8,)
  np.testing.assert_array_equal(act.low, -1)
  np.testing.assert_array_equal(act.high, 1)
  obs = env.step({'reset': True})
  assert obs['is_first'] and obs['reward'] == 0
  for act in actions(10, 8):
    obs = env.step({'reset': False, 'action': act})
    assert obs['reward'] in (0, 1) and not obs['is_first']
    assert obs['image'].std() > 0


@pytest.mark.parametrize('camera, name', [
    ('ego', 'walker/egocentric'), ('top', 'top_camera')])
def test_image_is_the_camera(rendering, camera, name):
  del rendering
  env = envs.make(
      'loconav_ball_maze_l', seed=2, size=(40, 56), camera=camera,
      proprio=False)
  assert set(env.obs_space) == {
      'image', 'reward', 'is_first', 'is_last', 'is_terminal'}
  obs = env.step({'reset': True})
  physics = env.unwrapped.dm_env.physics
  np.testing.assert_array_equal(
      obs['image'], physics.render(40, 56, camera_id=name))
  obs = env.step({'reset': False, 'action': np.ones(2, np.float32)})
  np.testing.assert_array_equal(
      obs['image'], physics.render(40, 56, camera_id=name))


def test_repeat_sums_and_matches_dm_control(rendering):
  del rendering
  from embodied.envs import loconav
  acts = actions(4, 8, seed=3)
  env = envs.make('loconav_ant_maze_s', seed=4, repeat=3)
  raw = loconav.build('ant', 'maze_s', 4, (64, 64), 'ego')
  obs = env.step({'reset': True})
  timestep = raw.reset()
  np.testing.assert_array_equal(
      obs['image'], timestep.observation['walker/egocentric_camera'])
  np.testing.assert_array_equal(
      obs['joints_pos'],
      timestep.observation['walker/joints_pos'].astype(np.float32))
  for act in acts:
    obs = env.step({'reset': False, 'action': act})
    total = 0.0
    for _ in range(3):
      timestep = raw.step(act.astype(np.float64))
      total += timestep.reward
    assert obs['reward'] == pytest.approx(total)
    for key in ('joints_pos', 'joints_vel', 'bodies_pos'):
      np.testing.assert_array_equal(
          obs[key], timestep.observation[f'walker/{key}'].astype(np.float32))


def test_reaching_the_target_pays_and_respawns(rendering):
  del rendering
  from dm_control.locomotion.walkers import ant
  env = envs.make('loconav_ant_maze_s', seed=0, proprio=False)
  raw = env.unwrapped.dm_env
  env.step({'reset': True})
  arena = raw.task.root_entity
  walker = next(e for e in arena.iter_entities() if isinstance(e, ant.Ant))
  # maze_s has one goal cell and one spawn cell.
  (goal,), (spawn,) = arena.target_positions, arena.spawn_positions
  walker.set_pose(raw.physics, position=[goal[0], goal[1], 0.6])
  zero = np.zeros(8, np.float32)
  rewards = [env.step({'reset': False, 'action': zero})['reward']
             for _ in range(5)]
  assert rewards == [1, 0, 0, 0, 0]
  position = raw.physics.bind(walker.root_body).xpos
  np.testing.assert_allclose(position[:2], spawn[:2], atol=0.1)


def test_time_limit_is_last_not_terminal(rendering):
  del rendering
  # 7 env steps with repeat 2: agent steps of 2, 2, 2 and 1.
  env = envs.make(
      'loconav_ball_maze_s', proprio=False, repeat=2, episode_length=7,
      size=(16, 16))
  zero = np.zeros(2, np.float32)
  obs = [env.step({'reset': True})]
  while not obs[-1]['is_last']:
    obs.append(env.step({'reset': False, 'action': zero}))
    assert len(obs) <= 5
  assert len(obs) == 5 and not obs[-1]['is_terminal']
  assert not any(o['is_last'] or o['is_terminal'] for o in obs[:-1])
  assert env.step({'reset': False, 'action': zero})['is_first']


def test_seed_fixes_episodes(rendering):
  del rendering
  def starts(seed):
    """Initial poses and views of two episodes."""
    env = envs.make('loconav_ant_maze_m', seed=seed, size=(16, 16))
    out = []
    for _ in range(2):
      image = env.step({'reset': True})['image']
      out.append((env.unwrapped.dm_env.physics.data.qpos.copy(), image))
    return out
  a, b, c = starts(0), starts(0), starts(1)
  for (qpos1, image1), (qpos2, image2) in zip(a, b):
    np.testing.assert_array_equal(qpos1, qpos2)
    np.testing.assert_array_equal(image1, image2)
  assert not np.array_equal(a[0][0], a[1][0])  # Episodes differ.
  assert not np.array_equal(a[0][0], c[0][0])  # Seeds differ.


def test_unknown_task_and_options():
  with pytest.raises(envs.UnknownTaskError, match='loconav_ant_maze_s'):
    envs.make('loconav_ant_maze_xxl')
  with pytest.raises(envs.UnknownTaskError, match='loconav_ball_maze_m'):
    envs.make('loconav_humanoid_maze_m')
  with pytest.raises(envs.OptionError, match='env.loconav.repeats'):
    envs.make('loconav_ant_maze_s', repeats=2)
  with pytest.raises(envs.OptionError, match='env.loconav.camera'):
    envs.make('loconav_ant_maze_s', camera='side')
  with pytest.raises(envs.OptionError, match='env.loconav.episode_length'):
    envs.make('loconav_ant_maze_s', episode_length=0)


def test_missing_labmaze(monkeypatch):
  monkeypatch.setitem(sys.modules, 'labmaze', None)
  with pytest.raises(envs.MissingPackageError) as info:
    envs.make('loconav_ant_maze_s')
  message = str(info.value)
  assert message.startswith('loconav tasks need dm_control and labmaze')
  assert 'pip install -r requirements-envs.txt' in message
  assert '\n' not in message


def test_no_renderer_is_one_line_error(monkeypatch):

  def fails(image=True):
    raise envs.MissingPackageError('no GL')

  from embodied.envs import dmc
  monkeypatch.setattr(dmc, 'select_renderer', fails)
  with pytest.raises(envs.MissingPackageError) as info:
    envs.make('loconav_ant_maze_s')
  message = str(info.value)
  assert 'apt-get install libegl1 or libosmesa6' in message
  assert '\n' not in message
