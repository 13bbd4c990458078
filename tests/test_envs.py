import elements
import gymnasium
import numpy as np
import pytest

from embodied import envs
from embodied.core import base
from embodied.core import wrappers
from embodied.envs import dummy


def run(env, policy, steps):
  """Steps env with policy(obs) -> action dict, resetting after is_last."""
  obs = env.step({'reset': True, **policy(None)})
  history = [obs]
  for _ in range(steps - 1):
    obs = env.step({'reset': obs['is_last'], **policy(obs)})
    history.append(obs)
  return history


def zero_action(env):
  return {
      k: np.zeros(v.shape, v.dtype)
      for k, v in env.act_space.items() if k != 'reset'}


class Recorder(base.Env):
  """Minimal env that records the actions it receives."""

  def __init__(self, act_space, obs=None, obs_space=None):
    self._act_space = act_space
    self._obs = obs or {}
    self._obs_space = obs_space or {
        k: elements.Space(v.dtype, v.shape) for k, v in self._obs.items()}
    self.actions = []

  @property
  def obs_space(self):
    spaces = self._obs_space
    return {
        **spaces, 'reward': elements.Space(np.float32),
        'is_first': elements.Space(bool), 'is_last': elements.Space(bool),
        'is_terminal': elements.Space(bool)}

  @property
  def act_space(self):
    return {**self._act_space, 'reset': elements.Space(bool)}

  def step(self, action):
    self.actions.append(action)
    return {
        **{k: v.copy() for k, v in self._obs.items()},
        'reward': np.float32(0), 'is_first': np.bool_(action['reset']),
        'is_last': np.bool_(False), 'is_terminal': np.bool_(False)}


# Dummy envs.

@pytest.mark.parametrize('task', ['dummy_disc', 'dummy_cont', 'dummy_vector'])
def test_dummy_spaces_and_episodes(task):
  env = wrappers.CheckSpaces(envs.make(task, episode_length=10))
  keys = set(env.obs_space)
  assert {'reward', 'is_first', 'is_last', 'is_terminal', 'vector'} <= keys
  assert ('image' in keys) == (task != 'dummy_vector')
  assert 'reset' in env.act_space
  space = env.act_space['action']
  history = run(env, lambda obs: {'action': space.sample()}, 33)
  for obs in history:
    for key, value in obs.items():
      assert value in env.obs_space[key], key
  # Episodes of 10 steps after the reset obs: 11 obs each.
  firsts = [i for i, obs in enumerate(history) if obs['is_first']]
  lasts = [i for i, obs in enumerate(history) if obs['is_last']]
  assert firsts == [0, 11, 22]
  assert lasts == [10, 21, 32]
  assert all(history[i]['is_terminal'] for i in lasts)
  assert not any(obs['is_terminal'] for obs in history if not obs['is_last'])
  assert all(history[i]['reward'] == 0 for i in firsts)


def test_dummy_disc_optimal_and_random_reward():
  env = envs.make('dummy_disc', episode_length=50)
  target = lambda obs: np.int32(np.argmax(obs['vector'][:6]))
  optimal = run(env, lambda o: {'action': np.int32(0) if o is None else target(o)}, 510)
  rewards = [obs['reward'] for obs in optimal if not obs['is_first']]
  assert len(rewards) == 500 and all(r == 1 for r in rewards)
  rng = np.random.default_rng(0)
  random = run(env, lambda o: {'action': np.int32(rng.integers(6))}, 3000)
  mean = np.mean([obs['reward'] for obs in random if not obs['is_first']])
  assert 0.13 < mean < 0.21, mean


def test_dummy_image_shows_the_target():
  env = envs.make('dummy_disc')
  obs = env.step({'reset': True, 'action': np.int32(0)})
  for _ in range(20):
    band = obs['image'][0, :, 0] == 255
    column = int(np.argmax(obs['vector'][:6]))
    edges = np.linspace(0, 64, 7).astype(int)
    assert band[edges[column]:edges[column + 1]].all()
    assert band.sum() == edges[column + 1] - edges[column]
    obs = env.step({'reset': False, 'action': np.int32(column)})
    assert obs['reward'] == 1


def test_dummy_cont_reward():
  env = envs.make('dummy_cont', episode_length=20)
  aim = lambda sign: lambda o: {
      'action': np.zeros(2, np.float32) if o is None else sign * o['vector'][:2]}
  best = run(env, aim(1), 21)
  assert all(obs['reward'] == 0 for obs in best)
  wrong = run(env, aim(-1), 21)
  assert np.mean([obs['reward'] for obs in wrong[1:]]) < -0.5


def test_dummy_is_seeded():
  a = envs.make('dummy_disc', seed=3)
  b = envs.make('dummy_disc', seed=3)
  c = envs.make('dummy_disc', seed=4)
  act = {'reset': False, 'action': np.int32(1)}
  seq = lambda env: [env.step(act)['vector'].argmax() for _ in range(20)]
  sa, sb, sc = seq(a), seq(b), seq(c)
  assert sa == sb and sa != sc


def test_dummy_work_costs_cpu_time_per_step():
  """work_ms: each step spends at least that much CPU time (thread clock,
  so not a wall-clock figure), and the observations stay those of the
  same seed without it."""
  import time
  slow = envs.make('dummy_vector', seed=1, work_ms=4)
  fast = envs.make('dummy_vector', seed=1)
  act = {'reset': False, 'action': np.int32(0)}
  start = time.thread_time()
  obs = [slow.step(act)['vector'] for _ in range(10)]
  assert time.thread_time() - start >= 10 * 0.004
  assert all((a == fast.step(act)['vector']).all() for a in obs)


def test_dummy_image_size():
  env = envs.make('dummy_disc', size=(32, 48))
  assert env.obs_space['image'].shape == (32, 48, 3)
  obs = env.step({'reset': True, 'action': np.int32(0)})
  assert obs['image'].shape == (32, 48, 3)


# Registry.

def test_unknown_suite_and_task():
  with pytest.raises(envs.UnknownTaskError, match="'foo_bar'.*'foo'.*dummy, gym"):
    envs.make('foo_bar')
  with pytest.raises(envs.UnknownTaskError, match='NoSuchEnv-v0'):
    envs.make('gym_NoSuchEnv-v0')
  with pytest.raises(envs.UnknownTaskError, match='dummy_nope'):
    envs.make('dummy_nope')
  with pytest.raises(envs.UnknownTaskError, match='<suite>_<name>'):
    envs.make('cartpole')
  assert issubclass(envs.UnknownTaskError, ValueError)
  assert {'dummy', 'gym', 'atari', 'atari100k', 'minatar'} <= set(
      envs.suites())
  assert envs.suites() == sorted(envs.suites())


# Gym.

def test_gym_cartpole_termination():
  env = wrappers.CheckSpaces(envs.make('gym_CartPole-v1', seed=1))
  assert env.obs_space['vector'].shape == (4,)
  assert env.obs_space['vector'].dtype == np.float32
  action = env.act_space['action']
  assert (action.dtype, action.shape, action.low, action.high) == (
      np.int32, (), 0, 2)
  # Always pushing left topples the pole in a few steps: a true termination.
  push = lambda obs: {'action': np.int32(0)}
  history = run(env, push, 200)
  lasts = [i for i, obs in enumerate(history) if obs['is_last']]
  assert 5 < lasts[0] < 50
  first = history[:lasts[0] + 1]
  assert first[-1]['is_terminal']
  assert not any(obs['is_terminal'] for obs in first[:-1])
  assert sum(obs['reward'] for obs in first) == len(first) - 1
  assert history[lasts[0] + 1]['is_first']


def test_gym_cartpole_time_limit():
  env = envs.make('gym_CartPole-v1', length=5)
  alternate = lambda obs: {'action': np.int32(0 if obs is None else obs['vector'][2] < 0)}
  history = run(env, alternate, 18)
  flags = [
      (bool(o['is_first']), bool(o['is_last']), bool(o['is_terminal']))
      for o in history]
  episode = [(True, False, False)] + [(False, False, False)] * 4 + [(False, True, False)]
  assert flags == episode * 3


def test_gym_seed_on_first_reset_only():
  first = lambda seed: envs.make('gym_CartPole-v1', seed=seed).step(
      {'reset': True, 'action': np.int32(0)})
  assert np.array_equal(first(5)['vector'], first(5)['vector'])
  assert not np.array_equal(first(5)['vector'], first(6)['vector'])
  env = envs.make('gym_CartPole-v1', seed=5)
  a = env.step({'reset': True, 'action': np.int32(0)})['vector']
  b = env.step({'reset': True, 'action': np.int32(0)})['vector']
  assert not np.array_equal(a, b)


def test_gym_pendulum_normalized_and_truncated():
  env = envs.make('gym_Pendulum-v1')
  space = env.act_space['action']
  assert space.dtype == np.float32 and space.shape == (1,)
  assert (space.low == -1).all() and (space.high == 1).all()
  inner = env.unwrapped.gym_env
  low, high = inner.unwrapped.action_space.low, inner.unwrapped.action_space.high
  assert low[0] == -2 and high[0] == 2
  received = []
  original = inner.step
  inner.step = lambda act: received.append(np.array(act)) or original(act)
  # The agent's unclipped samples reach the env clipped to the bounds.
  values = [-1.0, 1.0, 0.0, 0.5, -3.5, 2.2]
  policy = lambda obs: {'action': np.array([values[len(received) % 6]], np.float32)}
  history = run(env, policy, 202)
  np.testing.assert_allclose(
      received[:6],
      [low, high, (low + high) / 2, low + 0.75 * (high - low), low, high])
  assert received[0].dtype == inner.unwrapped.action_space.dtype
  lasts = [i for i, obs in enumerate(history) if obs['is_last']]
  assert lasts == [200]
  assert not history[200]['is_terminal']
  assert history[201]['is_first']


@pytest.mark.parametrize('task', [
    'gym_CartPole-v1', 'gym_Pendulum-v1', 'gym_MountainCar-v0',
    'gym_MountainCarContinuous-v0', 'gym_Acrobot-v1', 'gym_FrozenLake-v1'])
def test_gym_obs_and_actions_match_spaces(task):
  env = wrappers.CheckSpaces(envs.make(task, length=30))
  space = env.act_space['action']
  if np.issubdtype(space.dtype, np.floating):
    assert (space.low == -1).all() and (space.high == 1).all()
  history = run(env, lambda obs: {'action': space.sample()}, 70)
  assert sum(bool(obs['is_last']) for obs in history) >= 2


def test_gym_image_obs_are_resized():
  pytest.importorskip('ale_py')
  env = wrappers.CheckSpaces(
      envs.make('gym_ale_py:ALE/Pong-v5', size=(48, 40), length=10))
  assert env.obs_space['image'].shape == (48, 40, 3)
  assert env.act_space['action'].high == 6
  history = run(env, lambda obs: {'action': np.int32(1)}, 12)
  assert history[0]['image'].shape == (48, 40, 3)
  assert history[0]['image'].dtype == np.uint8 and history[0]['image'].max() > 0
  assert history[10]['is_last'] and not history[10]['is_terminal']


class DictObsEnv(gymnasium.Env):
  observation_space = gymnasium.spaces.Dict({
      'camera': gymnasium.spaces.Box(0, 255, (8, 6, 3), np.uint8),
      'pos': gymnasium.spaces.Box(-1, 1, (2, 2), np.float64),
      'reward': gymnasium.spaces.Discrete(3, start=1),
  })
  action_space = gymnasium.spaces.Discrete(4, start=2)

  def reset(self, seed=None, options=None):
    super().reset(seed=seed)
    self.t = 0
    return self._obs(), {}

  def step(self, action):
    self.last_action = action
    self.t += 1
    return self._obs(), 0.5, False, self.t >= 3, {}

  def _obs(self):
    return {
        'camera': np.full((8, 6, 3), self.t, np.uint8),
        'pos': np.full((2, 2), self.t / 10),
        'reward': 1 + self.t % 3}


def test_gym_dict_obs_and_discrete_obs():
  from embodied.envs.gym import Gym
  inner = DictObsEnv()
  env = wrappers.CheckSpaces(Gym(inner))
  assert env.obs_space['camera'].shape == (8, 6, 3)
  assert env.obs_space['pos'].shape == (4,)
  assert env.obs_space['obs_reward'].shape == (3,)
  assert env.act_space['action'].high == 4
  history = run(env, lambda obs: {'action': np.int32(3)}, 4)
  assert inner.last_action == 5
  assert history[2]['camera'][0, 0, 0] == 2
  np.testing.assert_allclose(history[2]['pos'], 0.2)
  np.testing.assert_array_equal(history[2]['obs_reward'], [0, 0, 1])
  assert history[3]['is_last'] and not history[3]['is_terminal']
  assert history[3]['reward'] == np.float32(0.5)
  lake = wrappers.CheckSpaces(envs.make('gym_FrozenLake-v1'))
  obs = lake.step({'reset': True, 'action': np.int32(0)})
  np.testing.assert_array_equal(obs['vector'], np.eye(16)[0])


# Wrappers.

def test_one_hot_action_round_trip():
  env = wrappers.OneHotAction(envs.make('dummy_disc'))
  space = env.act_space['action']
  assert (space.dtype, space.shape) == (np.float32, (6,))
  obs = env.step({'reset': True, 'action': np.zeros(6, np.float32)})
  for _ in range(10):
    onehot = np.eye(6, dtype=np.float32)[np.argmax(obs['vector'][:6])]
    assert onehot in space
    obs = env.step({'reset': False, 'action': onehot})
    assert obs['reward'] == 1
  recorder = Recorder({'action': elements.Space(np.int32, (), 3, 7)})
  wrapped = wrappers.OneHotAction(recorder)
  wrapped.step({'reset': False, 'action': np.array([0, 0, 1, 0], np.float32)})
  assert recorder.actions[-1]['action'] == 5
  assert recorder.actions[-1]['action'].dtype == np.int32
  with pytest.raises(ValueError, match='one-hot'):
    env.step({'reset': False, 'action': np.array([0, 1, 1, 0, 0, 0], np.float32)})
  with pytest.raises(ValueError, match='shape'):
    env.step({'reset': False, 'action': np.ones(5, np.float32)})


def test_normalize_action():
  space = elements.Space(np.float64, (3,), [-4, 0, -np.inf], [2, 10, np.inf])
  recorder = Recorder({'action': space})
  env = wrappers.NormalizeAction(recorder)
  exposed = env.act_space['action']
  np.testing.assert_array_equal(exposed.low, [-1, -1, -np.inf])
  np.testing.assert_array_equal(exposed.high, [1, 1, np.inf])
  env.step({'reset': False, 'action': np.array([-1, 1, 7], np.float32)})
  env.step({'reset': False, 'action': np.array([1, 0, -7], np.float32)})
  env.step({'reset': True})
  np.testing.assert_allclose(recorder.actions[0]['action'], [-4, 10, 7])
  np.testing.assert_allclose(recorder.actions[1]['action'], [2, 5, -7])
  assert recorder.actions[0]['action'].dtype == np.float64


def test_clip_action():
  recorder = Recorder({'action': elements.Space(np.float32, (2,), -1, 1)})
  env = wrappers.ClipAction(recorder, 'action')
  env.step({'reset': False, 'action': np.array([-3, 0.5], np.float32)})
  env.step({'reset': False, 'action': np.array([1.5, -0.2], np.float32)})
  np.testing.assert_allclose(recorder.actions[0]['action'], [-1, 0.5])
  np.testing.assert_allclose(recorder.actions[1]['action'], [1, -0.2])


def test_resize_image():
  env = wrappers.ResizeImage(envs.make('dummy_disc'), size=(32, 48))
  assert env.obs_space['image'].shape == (32, 48, 3)
  obs = env.step({'reset': True, 'action': np.int32(0)})
  assert obs['image'].shape == (32, 48, 3) and obs['image'].dtype == np.uint8
  assert obs['image'] in env.obs_space['image']
  # The band stays in the same relative place.
  column = int(np.argmax(obs['vector'][:6]))
  centre = np.flatnonzero(obs['image'][0, :, 0] > 128).mean() / 48
  assert abs(centre - (column + 0.5) / 6) < 0.05
  # Channel counts PIL has no mode for are resized per channel.
  image = np.arange(16 * 16 * 2, dtype=np.uint8).reshape(16, 16, 2)
  recorder = Recorder({'action': elements.Space(np.int32, (), 0, 2)}, {'image': image})
  env = wrappers.ResizeImage(recorder, size=(8, 4))
  obs = env.step({'reset': True, 'action': np.int32(0)})
  assert obs['image'].shape == (8, 4, 2) and obs['image'].dtype == np.uint8
  assert env.obs_space['image'].shape == (8, 4, 2)


def test_make_resizes_gym_images():
  from embodied.envs.gym import Gym
  env = envs.wrap(Gym(DictObsEnv()), size=(4, 4))
  obs = env.step({'reset': True, 'action': np.int32(0)})
  assert obs['camera'].shape == (4, 4, 3)
  assert env.obs_space['camera'].shape == (4, 4, 3)


def test_time_limit():
  env = wrappers.TimeLimit(dummy.Dummy('disc', episode_length=100), 7)
  history = run(env, lambda obs: {'action': np.int32(0)}, 16)
  lasts = [i for i, obs in enumerate(history) if obs['is_last']]
  assert lasts == [7, 15]
  assert not any(obs['is_terminal'] for obs in history)
  assert history[8]['is_first']
  # The inner episode ending first is passed through, terminal included.
  env = wrappers.TimeLimit(dummy.Dummy('disc', episode_length=3), 7)
  history = run(env, lambda obs: {'action': np.int32(0)}, 8)
  assert [i for i, o in enumerate(history) if o['is_last']] == [3, 7]
  assert all(history[i]['is_terminal'] for i in (3, 7))
  # A duration of 0 or None disables the limit.
  for duration in (0, None):
    env = wrappers.TimeLimit(dummy.Dummy('disc', episode_length=30), duration)
    history = run(env, lambda obs: {'action': np.int32(0)}, 31)
    assert [i for i, o in enumerate(history) if o['is_last']] == [30]


def test_check_spaces_names_the_problem():
  env = wrappers.CheckSpaces(envs.make('dummy_disc'))
  env.step({'reset': True, 'action': np.int32(0)})
  with pytest.raises(ValueError, match=r"Action 'action'.*float32.*int32"):
    env.step({'reset': False, 'action': np.float32(1)})
  with pytest.raises(ValueError, match=r"Action 'action'.*range \[9, 9\]"):
    env.step({'reset': False, 'action': np.int32(9)})
  with pytest.raises(ValueError, match=r"missing \['action'\]"):
    env.step({'reset': False})
  with pytest.raises(ValueError, match=r"unexpected \['actoin'\]"):
    env.step({'reset': False, 'action': np.int32(1), 'actoin': np.int32(1)})
  # On reset the other action keys are ignored and may be left out.
  assert env.step({'reset': np.bool_(True)})['is_first']
  bad = wrappers.CheckSpaces(Recorder(
      {'action': elements.Space(np.int32, (), 0, 2)},
      obs={'image': np.zeros((4, 5), np.uint8)},
      obs_space={'image': elements.Space(np.uint8, (4, 4))}))
  with pytest.raises(ValueError, match=r"Obs 'image' with shape \(4, 5\).*\(4, 4\)"):
    bad.step({'reset': True, 'action': np.int32(0)})


def test_wrapper_forwards_attributes():
  inner = dummy.Dummy('disc')
  env = wrappers.TimeLimit(wrappers.OneHotAction(inner), 5)
  assert env.unwrapped is inner
  assert env._length == 100
  assert env.obs_space.keys() == inner.obs_space.keys()
  env.close()
