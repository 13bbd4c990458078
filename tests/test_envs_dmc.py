"""DeepMind Control against the real dm_control: spaces, action repeat and
reward sums against stepping dm_control by hand, time limit vs termination,
cameras, rendering setup and the missing-package error."""

import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from embodied import envs
from embodied.core import wrappers

pytest.importorskip('dm_control')

ROOT = pathlib.Path(__file__).resolve().parent.parent
NO_IMAGE = {'image': False}


@pytest.fixture(scope='module')
def rendering():
  """Skips image tests where no headless OpenGL backend works."""
  try:
    envs.make('dmc_cartpole_balance', size=(8, 8)).close()
  except envs.MissingPackageError as e:
    pytest.skip(f'no headless rendering here: {e}')


def raw_env(domain, task, seed):
  from dm_control import suite
  return suite.load(domain, task, task_kwargs={'random': seed})


def actions(count, dims, seed=0):
  rng = np.random.default_rng(seed)
  return rng.uniform(-1, 1, (count, dims)).astype(np.float32)


def test_proprio_spaces_and_dtypes():
  env = wrappers.CheckSpaces(
      envs.make('dmc_walker_walk', image=False, proprio=True))
  spaces = env.obs_space
  assert 'image' not in spaces
  # One flat float32 vector per dm_control observation, scalars as (1,).
  assert spaces['orientations'].shape == (14,)
  assert spaces['height'].shape == (1,)
  assert spaces['velocity'].shape == (9,)
  for key in ('orientations', 'height', 'velocity'):
    assert spaces[key].dtype == np.float32
  act = env.act_space['action']
  assert act.dtype == np.float32 and act.shape == (6,)
  np.testing.assert_array_equal(act.low, -1)
  np.testing.assert_array_equal(act.high, 1)
  obs = env.step({'reset': True, 'action': np.zeros(6, np.float32)})
  assert obs['is_first'] and obs['reward'] == 0
  obs = env.step({'reset': False, 'action': np.ones(6, np.float32)})
  assert not obs['is_first'] and obs['height'].dtype == np.float32


def test_domain_names_with_underscores():
  env = envs.make('dmc_ball_in_cup_catch', image=False)
  assert env.act_space['action'].shape == (2,)
  env = envs.make('dmc_finger_turn_hard', image=False)
  assert 'target_position' in env.obs_space
  with pytest.raises(envs.UnknownTaskError, match='dmc_walker_walk'):
    envs.make('dmc_walker_jog', image=False)


@pytest.mark.parametrize('repeat', [1, 3])
def test_action_repeat_sums_rewards(repeat):
  acts = actions(12, 1)
  env = envs.make(
      'dmc_cartpole_swingup', seed=7, repeat=repeat, image=False)
  ours = [env.step({'reset': True, 'action': acts[0]})]
  for act in acts:
    ours.append(env.step({'reset': False, 'action': act}))
  raw = raw_env('cartpole', 'swingup', 7)
  timestep = raw.reset()
  np.testing.assert_array_equal(
      ours[0]['position'], timestep.observation['position'].astype(np.float32))
  for act, step in zip(acts, ours[1:]):
    total = 0.0
    for _ in range(repeat):
      timestep = raw.step(act.astype(np.float64))
      total += timestep.reward
    assert step['reward'] == pytest.approx(total, rel=1e-6, abs=1e-7)
    for key in ('position', 'velocity'):
      np.testing.assert_array_equal(
          step[key], timestep.observation[key].astype(np.float32))
  assert sum(s['reward'] for s in ours) > 0


def test_time_limit_is_last_not_terminal():
  # 1000 env steps = 500 agent steps with repeat 2, then a new episode.
  env = envs.make('dmc_cartpole_balance', image=False, repeat=2)
  zero = np.zeros(1, np.float32)
  obs = env.step({'reset': True, 'action': zero})
  steps = 0
  while not obs['is_last']:
    obs = env.step({'reset': False, 'action': zero})
    steps += 1
    assert not obs['is_terminal']
    assert steps <= 500
  assert steps == 500 and not obs['is_terminal']
  obs = env.step({'reset': False, 'action': zero})
  assert obs['is_first'] and not obs['is_last']


def test_termination_is_terminal():
  """A task that terminates (discount 0) mid-repeat: is_terminal, and the
  repeat stops at the episode end."""
  from dm_control.rl import control
  from dm_control.suite import cartpole
  from embodied.envs import dmc

  class Ends(cartpole.Balance):

    def get_termination(self, physics):
      if physics.data.time >= 0.1 - 1e-9:  # After 10 control steps.
        return 0.0

  physics = cartpole.Physics.from_xml_string(*cartpole.get_model_and_assets())
  task = Ends(swing_up=False, sparse=False, random=0)
  env = dmc.DMC(
      control.Environment(physics, task), domain='cartpole', repeat=4,
      image=False)
  zero = np.zeros(1, np.float32)
  obs = [env.step({'reset': True, 'action': zero})]
  while not obs[-1]['is_last']:
    obs.append(env.step({'reset': False, 'action': zero}))
  # 10 env steps with repeat 4: 4 + 4 + 2.
  assert len(obs) == 4
  assert obs[-1]['is_terminal']
  assert not any(o['is_terminal'] or o['is_last'] for o in obs[:-1])
  # Balance pays up to 1 per env step: the last agent step summed only 2.
  assert 1.5 < obs[-1]['reward'] <= 2 and 3 < obs[1]['reward'] <= 4


def test_image_size_and_camera(rendering):
  del rendering
  env = wrappers.CheckSpaces(envs.make(
      'dmc_quadruped_walk', size=(48, 80), proprio=False, repeat=1))
  assert set(env.obs_space) == {
      'image', 'reward', 'is_first', 'is_last', 'is_terminal'}
  assert env.obs_space['image'].shape == (48, 80, 3)
  assert env.obs_space['image'].dtype == np.uint8
  obs = env.step({'reset': True, 'action': np.zeros(12, np.float32)})
  assert obs['image'].shape == (48, 80, 3) and obs['image'].dtype == np.uint8
  # The quadruped's default is camera 2, as in DreamerV3.
  physics = env.unwrapped.dm_env.physics
  np.testing.assert_array_equal(
      obs['image'], physics.render(48, 80, camera_id=2))
  assert not np.array_equal(
      obs['image'], physics.render(48, 80, camera_id=0))
  other = envs.make(
      'dmc_quadruped_walk', size=(48, 80), proprio=False, camera=0)
  first = other.step({'reset': True, 'action': np.zeros(12, np.float32)})
  np.testing.assert_array_equal(
      first['image'], other.unwrapped.dm_env.physics.render(
          48, 80, camera_id=0))


def test_proprio_and_image_together(rendering):
  del rendering
  env = envs.make('dmc_walker_walk', size=(64, 64), repeat=2)
  assert {'image', 'orientations', 'height', 'velocity'} <= set(env.obs_space)
  acts = actions(3, 6)
  obs = env.step({'reset': True, 'action': acts[0]})
  for act in acts:
    obs = env.step({'reset': False, 'action': act})
    assert obs['image'].shape == (64, 64, 3)
    assert obs['image'].std() > 0  # Rendered something.


def test_bad_options():
  with pytest.raises(envs.OptionError, match='env.dmc.repeats'):
    envs.make('dmc_walker_walk', repeats=2)
  with pytest.raises(envs.OptionError, match='env.dmc.repeat'):
    envs.make('dmc_walker_walk', repeat=0)
  with pytest.raises(envs.OptionError, match='both False'):
    envs.make('dmc_walker_walk', image=False, proprio=False)
  with pytest.raises(envs.OptionError, match='env.dmc.image'):
    envs.make('dmc_walker_walk', image='no')


def test_missing_package(monkeypatch):
  monkeypatch.setitem(sys.modules, 'dm_control', None)
  with pytest.raises(envs.MissingPackageError) as info:
    envs.make('dmc_walker_walk', image=False)
  message = str(info.value)
  assert message.startswith(
      'dmc tasks need dm_control: pip install -r requirements-envs.txt')
  assert '\n' not in message


def _subprocess(code, **environ):
  env = {k: v for k, v in os.environ.items()
         if k not in ('MUJOCO_GL', 'PYOPENGL_PLATFORM')}
  env.update(environ)
  return subprocess.run(
      [sys.executable, '-c', code], cwd=ROOT, env=env, capture_output=True,
      text=True, timeout=300)


def test_renderer_defaults_to_working_backend():
  # In a fresh process without MUJOCO_GL: egl, else osmesa, into os.environ.
  proc = _subprocess(
      'import os\n'
      'from embodied import envs\n'
      'try:\n'
      '  env = envs.make("dmc_cartpole_balance", size=(8, 8))\n'
      'except envs.MissingPackageError as e:\n'
      '  print("MISSING", e); raise SystemExit\n'
      'env.step({"reset": True})\n'
      'print("BACKEND", os.environ["MUJOCO_GL"])\n')
  assert proc.returncode == 0, proc.stderr[-2000:]
  lines = proc.stdout.strip().splitlines()
  if lines[-1].startswith('MISSING'):
    assert 'neither egl nor osmesa works' in lines[-1]
    pytest.skip(lines[-1])
  assert lines[-1] in ('BACKEND egl', 'BACKEND osmesa')


def test_bad_renderer_is_one_line_error():
  proc = _subprocess(
      'from embodied import envs\n'
      'try:\n'
      '  envs.make("dmc_cartpole_balance")\n'
      'except envs.MissingPackageError as e:\n'
      '  print("ERROR", e)\n', MUJOCO_GL='bogus')
  assert proc.returncode == 0, proc.stderr[-2000:]
  line = proc.stdout.strip().splitlines()[-1]
  assert line.startswith(
      'ERROR dm_control cannot set up rendering with MUJOCO_GL=bogus')
