import collections
import functools
import os

import numpy as np
import psutil
import pytest

from embodied import envs
from embodied.core import Driver
from embodied.envs import dummy


def make_disc(seed, episode_length=4):
  return envs.make('dummy_disc', seed=seed, episode_length=episode_length)


def optimal(carry, obs):
  """Picks the target shown in the obs and counts its calls in the carry."""
  act = {'action': np.argmax(obs['vector'][:, :6], -1).astype(np.int32)}
  outs = {
      'log/count': np.full(len(obs['reward']), carry),
      'extra': obs['vector'][:, -1] * 2}
  return carry + 1, act, outs


def record(driver):
  trans = collections.defaultdict(list)
  driver.on_step(lambda tran, worker: trans[worker].append(tran))
  return trans


class FailingEnv(dummy.Dummy):
  """Raises on its third step, to test error reporting from children."""

  def __init__(self, **kwargs):
    super().__init__('disc', **kwargs)
    self._calls = 0

  def step(self, action):
    self._calls += 1
    if self._calls == 3:
      raise ValueError('boom from the env')
    return super().step(action)


class DyingEnv(dummy.Dummy):
  """Exits its process without a word on its third step."""

  def __init__(self, **kwargs):
    super().__init__('disc', **kwargs)
    self._calls = 0

  def step(self, action):
    self._calls += 1
    if self._calls == 3:
      os._exit(3)
    return super().step(action)


def test_steps_transitions_and_resets():
  driver = Driver([functools.partial(make_disc, i) for i in range(3)])
  trans = record(driver)
  driver.reset(lambda batch: 0)
  driver(optimal, steps=30)
  assert driver.carry == 10
  assert sorted(trans) == [0, 1, 2]
  for worker in range(3):
    seq = trans[worker]
    assert len(seq) == 10
    # Episodes of 4 steps: reset obs, 4 steps, then the driver resets.
    assert [bool(t['is_first']) for t in seq] == [True, False, False, False, False] * 2
    assert [bool(t['is_last']) for t in seq] == [False, False, False, False, True] * 2
    for t in seq:
      # Obs and the action chosen from it arrive together.
      assert t['action'] == np.argmax(t['vector'][:6])
      assert t['action'].dtype == np.int32
      assert t['reward'] == (0 if t['is_first'] else 1)
      assert t['extra'] == t['vector'][-1] * 2
      assert 'reset' not in t
    assert [int(t['log/count']) for t in seq] == list(range(10))
  # The transitions equal a fresh env stepped by hand with the same actions.
  env = make_disc(1)
  obs = env.step({'reset': True, 'action': np.int32(0)})
  for t in trans[1]:
    for key in obs:
      np.testing.assert_array_equal(obs[key], t[key])
    obs = env.step({'reset': t['is_last'], 'action': t['action']})
  driver.close()


def test_counts_steps_and_episodes():
  lengths = [2, 4, 6]
  fns = [functools.partial(make_disc, i, n) for i, n in enumerate(lengths)]
  driver = Driver(fns)
  trans = record(driver)
  driver.reset(lambda batch: 0)
  # A batch step is indivisible, so 7 steps run 3 batch steps.
  driver(optimal, steps=7)
  assert sum(len(v) for v in trans.values()) == 9
  driver.reset(lambda batch: 0)
  trans.clear()
  # Env 0 (2 steps per episode) ends after 3 batch steps: one episode.
  driver(optimal, episodes=1)
  assert [len(trans[i]) for i in range(3)] == [3, 3, 3]
  assert trans[0][0]['is_first'] and trans[0][-1]['is_last']
  trans.clear()
  # Continues where it stopped: env 0 resets, env 1 ends at its 5th obs, then
  # env 0 ends its second episode.
  driver(optimal, episodes=2)
  assert trans[0][0]['is_first'] and not trans[1][0]['is_first']
  assert [len(trans[i]) for i in range(3)] == [3, 3, 3]
  assert trans[1][1]['is_last'] and trans[0][2]['is_last']
  episodes = sum(int(t['is_last']) for v in trans.values() for t in v)
  assert episodes == 2
  trans.clear()
  # reset() makes every env start over on the next step.
  driver.reset(lambda batch: 0)
  driver(optimal, steps=3)
  assert all(trans[i][0]['is_first'] for i in range(3))
  driver.close()


def test_policy_sees_batched_obs():
  driver = Driver([functools.partial(make_disc, i) for i in range(2)])
  seen = []

  def policy(carry, obs):
    seen.append({k: (v.shape, v.dtype) for k, v in obs.items()})
    return optimal(carry, obs)

  driver.reset(lambda batch: batch * 100)
  assert driver.carry == 200
  driver(policy, steps=2)
  assert seen[0] == {
      'image': ((2, 64, 64, 3), np.uint8), 'vector': ((2, 7), np.float32),
      'reward': ((2,), np.float32), 'is_first': ((2,), bool),
      'is_last': ((2,), bool), 'is_terminal': ((2,), bool)}
  assert driver.obs_space.keys() == seen[0].keys()
  assert set(driver.act_space) == {'action', 'reset'}
  driver.close()


def run_transitions(parallel, fns, steps):
  driver = Driver(fns, parallel=parallel)
  trans = record(driver)
  driver.reset(lambda batch: 0)
  rng = np.random.default_rng(0)

  def policy(carry, obs):
    # Random but reproducible actions, so both runs take the same path.
    return carry, {'action': rng.integers(0, 6, len(obs['reward'])).astype(np.int32)}, {}

  driver(policy, steps=steps)
  driver.close()
  return trans


def test_parallel_matches_in_process():
  fns = [functools.partial(make_disc, 7), lambda: make_disc(8, 5)]
  local = run_transitions(False, fns, 24)
  remote = run_transitions(True, fns, 24)
  assert sorted(local) == sorted(remote) == [0, 1]
  for worker in (0, 1):
    assert len(local[worker]) == len(remote[worker]) == 12
    for a, b in zip(local[worker], remote[worker]):
      assert a.keys() == b.keys()
      for key in a:
        np.testing.assert_array_equal(a[key], b[key])
        assert a[key].dtype == b[key].dtype
  rewards = [t['reward'] for t in local[0] if not t['is_first']]
  assert 0 < sum(rewards) < len(rewards)


def child_pids(driver):
  return [env._proc.pid for env in driver._envs]


def assert_gone(pids):
  for pid in pids:
    try:
      status = psutil.Process(pid).status()
    except psutil.NoSuchProcess:
      continue
    pytest.fail(f'Child {pid} still exists with status {status}')


def test_parallel_child_error_surfaces(capsys):
  # The driver restarts the env (see test_env_crash.py); the child's error
  # and traceback reach stderr.
  fns = [functools.partial(make_disc, 0), FailingEnv]
  driver = Driver(fns, parallel=True)
  pids = child_pids(driver)
  driver.reset(lambda batch: 0)
  driver(optimal, steps=10)
  assert driver.restarts == 1
  message = capsys.readouterr().err
  assert 'env 1' in message
  assert 'Traceback' in message and 'boom from the env' in message
  assert 'FailingEnv' in message or 'test_driver.py' in message
  assert_gone(pids[1:])
  driver.close()
  assert_gone(pids)


def test_parallel_build_error_surfaces():
  def broken():
    raise KeyError('no such level')
  with pytest.raises(RuntimeError, match='no such level'):
    Driver([functools.partial(make_disc, 0), broken], parallel=True)
  # The healthy child is shut down and reaped too (no zombies left).
  workers = [
      p for p in psutil.Process().children()
      if any('spawn_main' in part for part in p.cmdline())]
  assert not workers


def test_parallel_child_death_surfaces(capsys):
  driver = Driver([functools.partial(make_disc, 0), DyingEnv], parallel=True)
  pids = child_pids(driver)
  driver.reset(lambda batch: 0)
  driver(optimal, steps=10)
  assert driver.restarts == 1
  assert 'Env worker 1 died (exit code 3)' in capsys.readouterr().err
  assert_gone(pids[1:])
  driver.close()
  assert_gone(pids)


def test_close_reaps_children():
  driver = Driver([functools.partial(make_disc, i) for i in range(2)], parallel=True)
  pids = child_pids(driver)
  driver.reset(lambda batch: 0)
  driver(optimal, steps=4)
  assert all(psutil.pid_exists(pid) for pid in pids)
  driver.close()
  assert_gone(pids)
  driver.close()  # Closing twice is harmless.
