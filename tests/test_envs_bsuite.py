"""BSuite against the real package: spaces, dm_env step semantics
(termination vs truncation), seeding, the missing-package error and the
MNIST experiments without network access."""

import gzip
import struct
import sys

import numpy as np
import pytest

from embodied import envs
from embodied.core import wrappers
from embodied.envs import bsuite as bsuite_env

bsuite = pytest.importorskip('bsuite')
dm_env = pytest.importorskip('dm_env')


def play(env, actions):
  obs = [env.step({'reset': True, 'action': np.int32(0)})]
  for action in actions:
    obs.append(env.step({'reset': False, 'action': np.int32(action)}))
  return obs


def test_catch_spaces_and_steps():
  env = wrappers.CheckSpaces(envs.make('bsuite_catch/0', seed=1))
  assert env.obs_space['vector'].shape == (50,)  # 10 rows x 5 columns.
  assert env.obs_space['vector'].dtype == np.float32
  act = env.act_space['action']
  assert act.dtype == np.int32 and (int(act.low), int(act.high)) == (0, 3)
  obs = play(env, [1] * 20)
  # Catch: the ball falls 9 rows, then the episode terminates with +-1.
  lasts = [i for i, o in enumerate(obs) if o['is_last']]
  assert lasts == [9, 19]
  assert all(obs[i]['is_terminal'] for i in lasts)
  assert obs[10]['is_first'] and obs[10]['reward'] == 0
  assert not any(o['is_terminal'] for i, o in enumerate(obs) if i not in lasts)
  assert all(obs[i]['reward'] in (-1, 1) for i in lasts)
  assert sum(abs(o['reward']) for o in obs) == 2


def test_matches_raw_env_with_seed():
  # The setting's seed is replaced by ours: same seed, same episodes.
  rng = np.random.default_rng(0)
  acts = rng.integers(0, 3, 40).tolist()
  ours = play(envs.make('bsuite_catch/3', seed=11), acts)
  raw = bsuite.load('catch', {'seed': 11})
  timestep = raw.reset()
  np.testing.assert_array_equal(
      ours[0]['vector'], timestep.observation.reshape(-1))
  for action, obs in zip(acts, ours[1:]):
    if timestep.last():
      timestep = raw.reset()
      assert obs['is_first']
      np.testing.assert_array_equal(
          obs['vector'], timestep.observation.reshape(-1))
      continue
    timestep = raw.step(action)
    np.testing.assert_array_equal(
        obs['vector'], timestep.observation.reshape(-1))
    assert obs['reward'] == timestep.reward
    assert obs['is_last'] == timestep.last()
  other = play(envs.make('bsuite_catch/3', seed=12), acts)
  assert any(not np.array_equal(a['vector'], b['vector'])
             for a, b in zip(ours, other))


class Truncating(dm_env.Environment):
  """A real dm_env env ending by time limit (discount 1) after 3 steps."""

  def __init__(self):
    self._t = 0

  def reset(self):
    self._t = 0
    return dm_env.restart(np.zeros((2, 2), np.float64))

  def step(self, action):
    self._t += 1
    obs = np.full((2, 2), self._t, np.float64)
    if self._t == 3:
      return dm_env.truncation(float(action), obs)
    return dm_env.transition(float(action), obs)

  def observation_spec(self):
    return dm_env.specs.Array((2, 2), np.float64)

  def action_spec(self):
    return dm_env.specs.DiscreteArray(4)


def test_truncation_is_last_only():
  env = bsuite_env.BSuite(Truncating())
  assert env.obs_space['vector'].shape == (4,)
  assert int(env.act_space['action'].high) == 4
  obs = play(env, [1, 2, 3, 0])
  assert [bool(o['is_last']) for o in obs] == [False, False, False, True, False]
  assert not any(o['is_terminal'] for o in obs)
  assert [float(o['reward']) for o in obs] == [0, 1, 2, 3, 0]
  assert obs[4]['is_first']
  np.testing.assert_array_equal(obs[3]['vector'], np.full(4, 3, np.float32))


@pytest.mark.parametrize('task', [
    'bsuite_deep_sea/3', 'bsuite_cartpole/0', 'bsuite_memory_len/0',
    'bsuite_bandit_noise/0'])
def test_other_experiments(task):
  env = wrappers.CheckSpaces(envs.make(task))
  obs = play(env, [0] * 5)
  assert all(o['vector'].dtype == np.float32 for o in obs)
  assert obs[0]['is_first']


def test_bad_input():
  with pytest.raises(envs.UnknownTaskError, match='catch has ids 0 to 19'):
    envs.make('bsuite_catch/20')
  with pytest.raises(envs.UnknownTaskError, match='bsuite_catch/0'):
    envs.make('bsuite_chess/0')
  with pytest.raises(envs.OptionError, match='env.bsuite.rows'):
    envs.make('bsuite_catch/0', rows=3)


def test_missing_package(monkeypatch):
  monkeypatch.setitem(sys.modules, 'bsuite', None)
  with pytest.raises(envs.MissingPackageError) as info:
    envs.make('bsuite_catch/0')
  message = str(info.value)
  assert message.startswith(
      'bsuite tasks need bsuite: pip install -r requirements-envs.txt')
  assert '\n' not in message


MNIST_TASKS = ['bsuite_mnist/0', 'bsuite_mnist_noise/0', 'bsuite_mnist_scale/0']


@pytest.fixture
def no_download(monkeypatch):
  """bsuite's MNIST loader, with downloads failing the test at once (this
  machine has no internet; a real attempt would wait on a timeout)."""
  from bsuite.utils import datasets

  def refuse(*args, **kwargs):
    raise AssertionError(f'MNIST download attempted: {args}')
  monkeypatch.setattr(datasets, 'urlretrieve', refuse)
  return datasets


def write_fake_mnist(directory, count=20):
  """MNIST's four files in its idx format, holding random digits."""
  rng = np.random.default_rng(0)
  images = rng.integers(0, 256, (count, 28, 28), dtype=np.uint8)
  labels = rng.integers(0, 10, count, dtype=np.uint8)
  for prefix in ('train', 't10k'):
    with gzip.open(directory / f'{prefix}-images-idx3-ubyte.gz', 'wb') as f:
      f.write(struct.pack('>IIII', 2051, count, 28, 28) + images.tobytes())
    with gzip.open(directory / f'{prefix}-labels-idx1-ubyte.gz', 'wb') as f:
      f.write(struct.pack('>II', 2049, count) + labels.tobytes())


@pytest.mark.parametrize('task', MNIST_TASKS)
def test_mnist_without_cache_fails_cleanly(task, tmp_path, monkeypatch,
                                          no_download):
  cache = tmp_path / 'mnist'
  monkeypatch.setattr(bsuite_env, 'MNIST_DIR', str(cache))
  with pytest.raises(envs.MissingPackageError) as info:
    envs.make(task)
  message = str(info.value)
  assert message.startswith(
      f"Task '{task}' downloads MNIST at run time, which cannot happen here")
  assert str(cache) in message and 'load_mnist' in message
  assert '\n' not in message


def test_mnist_with_cache_runs_offline(tmp_path, monkeypatch, no_download):
  write_fake_mnist(tmp_path)
  monkeypatch.setattr(bsuite_env, 'MNIST_DIR', str(tmp_path))
  # bsuite reads its own default folder: point it at the same cache.
  monkeypatch.setattr(
      no_download.load_mnist, '__defaults__', (str(tmp_path),))
  env = wrappers.CheckSpaces(envs.make('bsuite_mnist/0', seed=3))
  assert env.obs_space['vector'].shape == (784,)
  assert int(env.act_space['action'].high) == 10
  obs = play(env, [4, 0])
  # A one-step bandit episode: guess the label, +-1, terminate.
  assert obs[0]['is_first'] and obs[0]['vector'].max() <= 1
  assert obs[1]['is_last'] and obs[1]['is_terminal']
  assert obs[1]['reward'] in (-1, 1)
  assert obs[2]['is_first']
