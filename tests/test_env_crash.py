"""The Driver survives envs that raise or die: it rebuilds them, ends the
interrupted episode as a truncation and gives up with EnvCrashError after
too many failures in a row."""

import collections
import functools
import json
import os
import pathlib
import subprocess
import sys

import elements
import numpy as np
import pytest

import embodied
from embodied.core import Driver, EnvCrashError, base

LENGTH = 5  # Steps per episode of CrashEnv.
ROOT = pathlib.Path(__file__).resolve().parent.parent


class CrashEnv(base.Env):
  """Counts the steps of its episode in 'vector' (reward 1 per step; an
  episode ends with is_terminal after LENGTH steps) and fails on plan.

  Every build appends a line to `log`, so the number of lines is the number
  of constructor calls, also across processes. plan maps a build number
  (0 for the first build) to (what, n): 'step' raises on that build's n-th
  non-reset step, 'reset' on its n-th reset, 'exit' ends its process on the
  n-th step, 'build' makes the constructor itself raise. The key 'all'
  applies to every build without an own entry.
  """

  def __init__(self, log, plan):
    log = pathlib.Path(log)
    self.build = len(log.read_text().splitlines()) if log.exists() else 0
    with log.open('a') as f:
      f.write(f'{os.getpid()}\n')
    self.what, self.when = plan.get(self.build, plan.get('all', (None, 0)))
    if self.what == 'build':
      raise OSError(f'build {self.build} failed')
    self.resets = self.steps = self.t = 0
    self.done = True

  @property
  def obs_space(self):
    return {'vector': elements.Space(np.float32, (1,)), **base.step_spaces()}

  @property
  def act_space(self):
    return base.discrete_act_space(2)

  def step(self, action):
    if action['reset'] or self.done:
      self.resets += 1
      if (self.what, self.when) == ('reset', self.resets):
        raise RuntimeError(f'reset {self.resets} failed')
      self.t, self.done = 0, False
      return self._obs(0.0, True)
    self.steps += 1
    if (self.what, self.when) == ('step', self.steps):
      raise ValueError(f'step {self.steps} of build {self.build} failed')
    if (self.what, self.when) == ('exit', self.steps):
      os._exit(3)
    self.t += 1
    self.done = self.t >= LENGTH
    return self._obs(1.0, False)

  def _obs(self, reward, first):
    return {
        'vector': np.array([self.t], np.float32),
        'reward': np.float32(reward), 'is_first': np.bool_(first),
        'is_last': np.bool_(self.done), 'is_terminal': np.bool_(self.done)}


DRIVERS = []


@pytest.fixture(autouse=True)
def close_drivers():
  """Closes the test's drivers even when it fails, so no env workers stay
  behind for later tests (test_driver.py checks for leftover children)."""
  yield
  while DRIVERS:
    DRIVERS.pop().close()


def make_driver(tmp_path, plans, parallel, **kwargs):
  """One CrashEnv per plan; builds of env i are logged to env{i}.log."""
  fns = [functools.partial(CrashEnv, tmp_path / f'env{i}.log', plan)
         for i, plan in enumerate(plans)]
  driver = Driver(fns, parallel=parallel, **kwargs)
  DRIVERS.append(driver)
  trans = collections.defaultdict(list)
  driver.on_step(lambda tran, worker: trans[worker].append(tran))
  driver.reset(lambda batch: 0)
  return driver, trans


def policy(carry, obs):
  assert obs['vector'].shape == (len(obs['reward']), 1)
  return carry, {'action': np.zeros(len(obs['reward']), np.int32)}, {}


def builds(tmp_path, index):
  return len((tmp_path / f'env{index}.log').read_text().splitlines())


def flags(seq, key):
  return [bool(t[key]) for t in seq]


def check_clean(seq):
  """The invariants replay and episode stats rely on, crashes or not: an
  episode starts with is_first and ends with is_last; is_terminal only
  where the env really terminated (after LENGTH steps)."""
  assert seq[0]['is_first']
  for prev, tran in zip(seq, seq[1:]):
    assert bool(tran['is_first']) == bool(prev['is_last'])
  for tran in seq:
    if tran['is_terminal']:
      assert tran['is_last'] and tran['vector'][0] == LENGTH


PARALLEL = pytest.mark.parametrize(
    'parallel', [False, True], ids=['local', 'parallel'])


@pytest.mark.parametrize('what,parallel', [
    ('step', False), ('step', True), ('exit', True)])
def test_step_failure_ends_episode_as_truncation(tmp_path, capsys, what,
                                                 parallel):
  driver, trans = make_driver(tmp_path, [{}, {0: (what, 3)}], parallel)
  replay = embodied.Replay(length=4, capacity=1000, chunksize=16)
  driver.on_step(replay.add)
  driver(policy, steps=2 * 12)
  assert driver.restarts == 1
  assert driver.stats() == {'env/restarts': 1}
  assert driver.stats() == {'env/restarts': 0}
  assert builds(tmp_path, 0) == 1 and builds(tmp_path, 1) == 2
  seq = trans[1]
  assert len(seq) == 12
  # Reset, two steps, then the third step fails: the episode ends there as
  # a truncation that repeats the last obs without reward.
  crash = seq[3]
  assert crash['is_last'] and not crash['is_terminal']
  assert not crash['is_first'] and crash['reward'] == 0
  assert crash['vector'][0] == seq[2]['vector'][0] == 2
  assert crash['reward'].dtype == np.float32
  # The new env starts a fresh episode on the next step and runs it fully.
  assert flags(seq, 'is_first') == [1, 0, 0, 0, 1, 0, 0, 0, 0, 0, 1, 0]
  assert flags(seq, 'is_terminal') == [0] * 9 + [1, 0, 0]
  check_clean(seq)
  # The healthy env is not disturbed.
  assert flags(trans[0], 'is_last') == [0, 0, 0, 0, 0, 1] * 2
  check_clean(trans[0])
  # Every transition reached replay, which serves batches without a false
  # terminal.
  assert replay.stats()['replay/inserts'] == 24
  batch = replay.sample(8)
  terminal = batch['is_terminal'].astype(bool)
  assert (batch['vector'][..., 0][terminal] == LENGTH).all()
  err = capsys.readouterr().err
  assert err.count('Warning: restarting env 1') == 1
  assert 'env 0' not in err


@PARALLEL
@pytest.mark.parametrize('reset', [1, 2])
def test_reset_failure_starts_new_episode(tmp_path, reset, parallel):
  # A failed reset interrupted no episode: the new env resets at once and
  # the step shows its first obs, not a second is_last.
  driver, trans = make_driver(tmp_path, [{0: ('reset', reset)}], parallel)
  driver(policy, steps=14)
  assert driver.restarts == 1 and builds(tmp_path, 0) == 2
  seq = trans[0]
  assert flags(seq, 'is_first') == [1, 0, 0, 0, 0, 0] * 2 + [1, 0]
  assert flags(seq, 'is_terminal') == [0, 0, 0, 0, 0, 1] * 2 + [0, 0]
  check_clean(seq)


@PARALLEL
def test_failed_rebuild_is_retried(tmp_path, parallel):
  plan = {0: ('step', 2), 1: ('build', 0)}
  driver, trans = make_driver(tmp_path, [plan], parallel)
  driver(policy, steps=6)
  # The first rebuild raised, the second one worked.
  assert driver.restarts == 2 and builds(tmp_path, 0) == 3
  assert flags(trans[0], 'is_last') == [0, 0, 1, 0, 0, 0]
  check_clean(trans[0])


@PARALLEL
@pytest.mark.parametrize('what', ['step', 'reset'])
def test_gives_up_after_max_restarts(tmp_path, capsys, what, parallel):
  # Every build fails on its first step (or reset): a reset in between does
  # not count as progress, so the third failure in a row exceeds the limit.
  plans = [{}, {'all': (what, 1)}]
  driver, trans = make_driver(tmp_path, plans, parallel, max_restarts=2)
  with pytest.raises(EnvCrashError) as info:
    driver(policy, steps=100)
  message = str(info.value)
  assert 'Env 1 failed 3 times in a row' in message
  assert 'env_max_restarts' in message
  assert f'Error: {what} 1' in message.split('Last error: ')[1]
  assert '\n' not in message
  assert isinstance(info.value, RuntimeError)
  assert (info.value.index, info.value.count) == (1, 3)
  assert driver.restarts == 2 and builds(tmp_path, 1) == 3
  err = capsys.readouterr().err
  assert err.count('Warning: restarting env 1') == 2
  assert err.count('Traceback') == 1  # Once per env, not per restart.


def test_progress_between_failures_resets_the_count(tmp_path):
  # Every build fails on its second step, after one good step: the failures
  # never come in a row, so the run goes on however many there are.
  plans = [{'all': ('step', 2)}]
  driver, trans = make_driver(tmp_path, plans, False, max_restarts=1)
  driver(policy, steps=30)
  assert driver.restarts == 10 and builds(tmp_path, 0) == 11
  assert flags(trans[0], 'is_last') == [0, 0, 1] * 10
  check_clean(trans[0])


def test_zero_max_restarts_never_gives_up(tmp_path, monkeypatch):
  monkeypatch.setattr(Driver, 'BACKOFF', 0.0)
  plans = [{'all': ('step', 1)}]
  driver, trans = make_driver(tmp_path, plans, False, max_restarts=0)
  driver(policy, steps=60)
  assert driver.restarts == 30
  check_clean(trans[0])


def test_backoff_between_failures_in_a_row(tmp_path, monkeypatch):
  sleeps = []
  monkeypatch.setattr('time.sleep', sleeps.append)
  plans = [{'all': ('reset', 1)}]
  driver, _ = make_driver(tmp_path, plans, False, max_restarts=5)
  with pytest.raises(EnvCrashError):
    driver(policy, steps=1)
  b = Driver.BACKOFF
  assert sleeps == [b, 2 * b, 4 * b, 8 * b]


# End to end: a gymnasium env that crashes now and then, trained through
# dreamerv3/main.py with the debug config.

GYM_MODULE = '''
import gymnasium
import numpy as np

CALLS = {'step': 0, 'reset': 0}


class Flaky(gymnasium.Env):
  """Counts up to 10, then terminates; every 37th step and every 5th reset
  (counted over all instances in this process) raise."""

  observation_space = gymnasium.spaces.Box(0, 10, (1,), np.float32)
  action_space = gymnasium.spaces.Discrete(2)

  def reset(self, seed=None, options=None):
    super().reset(seed=seed)
    CALLS['reset'] += 1
    if CALLS['reset'] % 5 == 0:
      raise RuntimeError('flaky reset')
    self.t = 0
    return np.zeros(1, np.float32), {}

  def step(self, action):
    CALLS['step'] += 1
    if CALLS['step'] % 37 == 0:
      raise RuntimeError('flaky step')
    self.t += 1
    return np.full(1, self.t, np.float32), 1.0, self.t >= 10, False, {}


class Broken(gymnasium.Env):
  """Resets fine, then fails on every step."""

  observation_space = Flaky.observation_space
  action_space = Flaky.action_space

  def reset(self, seed=None, options=None):
    super().reset(seed=seed)
    return np.zeros(1, np.float32), {}

  def step(self, action):
    raise RuntimeError('broken step')


gymnasium.register('Flaky-v0', entry_point=Flaky)
gymnasium.register('Broken-v0', entry_point=Broken)
'''


def run_main(tmp_path, task, *args):
  (tmp_path / 'flaky_env.py').write_text(GYM_MODULE)
  env = dict(os.environ, PYTHONPATH=str(tmp_path))
  return subprocess.run(
      [sys.executable, 'dreamerv3/main.py', '--configs', 'debug',
       '--task', f'gym_flaky_env:{task}', '--logdir', str(tmp_path / 'run'),
       '--jax.cache_dir', str(tmp_path / 'jax_cache'), *args],
      cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_main_survives_crashing_gym_env(tmp_path):
  proc = run_main(tmp_path, 'Flaky-v0', '--run.steps', '300',
                  '--run.log_every', '0')
  logdir = tmp_path / 'run'
  assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
  assert 'Warning: restarting env' in proc.stderr
  metrics = [json.loads(line) for line in
             (logdir / 'metrics.jsonl').read_text().splitlines()]
  restarts = sum(m.get('env/restarts', 0) for m in metrics)
  assert restarts > 0
  assert proc.stderr.count('Warning: restarting env') == restarts
  scores = [json.loads(line) for line in
            (logdir / 'scores.jsonl').read_text().splitlines()]
  episodes = [(s['episode/score'], s['episode/length']) for s in scores
              if 'episode/score' in s]
  # Full episodes score 10 in 10 steps; a crash cuts one short with a last
  # step without reward.
  assert (10.0, 10.0) in episodes
  cut = [e for e in episodes if e != (10.0, 10.0)]
  assert cut and all(length <= 10 and score == length - 1
                     for score, length in cut)
  # Replay holds no terminal other than the real ones at t = 10, and holds
  # the truncations.
  truncations = 0
  for path in (logdir / 'replay').glob('*.npz'):
    with np.load(path) as chunk:
      last, terminal = chunk['is_last'], chunk['is_terminal']
      assert (chunk['vector'][..., 0][terminal] == 10).all()
      truncations += int((last & ~terminal).sum())
  assert truncations > 0


@pytest.mark.slow
def test_main_stops_on_broken_gym_env(tmp_path):
  proc = run_main(tmp_path, 'Broken-v0', '--run.env_max_restarts', '2')
  assert proc.returncode == 1, proc.stdout[-3000:] + proc.stderr[-3000:]
  last = proc.stderr.strip().splitlines()[-1]
  assert last.startswith('Error: Env 0 failed 3 times in a row'), last
  assert 'broken step' in last
  assert proc.stderr.count('Warning: restarting env') == 4  # Both envs.
  # The loop saved a checkpoint before the error ended the run.
  assert (tmp_path / 'run' / 'ckpt' / 'latest').exists()
