"""Crafter against the real package: spaces, episode ends, achievement logs
and the Crafter score."""

import importlib.util
import json
import math
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from embodied import envs
from embodied.core import wrappers
from embodied.envs import crafter as crafter_env
from embodied.run import common

crafter = pytest.importorskip('crafter')

ROOT = pathlib.Path(__file__).resolve().parent.parent
NAN_KEYS = [f'log/achievement_{n}' for n in crafter_env.ACHIEVEMENTS] + [
    'log/crafter_score', 'log/return']


def rollout(env, actions):
  """Reset, then one step per action; stops after the first is_last."""
  obs = [env.step({'reset': True, 'action': np.int32(0)})]
  for action in actions:
    obs.append(env.step({'reset': False, 'action': np.int32(action)}))
    if obs[-1]['is_last']:
      break
  return obs


def reference(seed, actions, length=10000):
  """The raw crafter.Env on the same seed and actions."""
  env = crafter.Env(seed=seed, length=length)
  images, rewards, dones, infos = [env.reset()], [0.0], [False], [None]
  for action in actions:
    image, reward, done, info = env.step(action)
    images.append(image)
    rewards.append(reward)
    dones.append(done)
    infos.append(info)
    if done:
      break
  return images, rewards, dones, infos


def test_crafter_score_hand_computed():
  # Two achievements at 1% and 7%: exp((ln 2 + ln 8) / 2) - 1 = sqrt(16) - 1.
  assert crafter_env.crafter_score([1, 7]) == pytest.approx(3.0)
  # Equal rates give that rate back; all zero gives 0.
  assert crafter_env.crafter_score([40.0] * 22) == pytest.approx(40.0)
  assert crafter_env.crafter_score([0.0] * 22) == 0.0
  # One of 22 achievements at 100%: 101 ** (1 / 22) - 1 = 0.2334...
  rates = {n: 0.0 for n in crafter_env.ACHIEVEMENTS}
  rates['wake_up'] = 100.0
  assert crafter_env.crafter_score(rates) == pytest.approx(
      101 ** (1 / 22) - 1)
  assert crafter_env.crafter_score(rates) == pytest.approx(0.23340, abs=1e-5)
  # Hafner's geometric mean stays below the arithmetic one.
  mixed = [90, 50, 10, 1, 0]
  expected = math.exp(sum(math.log(1 + s) for s in mixed) / 5) - 1
  assert crafter_env.crafter_score(mixed) == pytest.approx(expected)
  assert expected < np.mean(mixed)


@pytest.mark.parametrize('rates', [[], [101.0], [-1.0], [float('nan')]])
def test_crafter_score_rejects_bad_rates(rates):
  with pytest.raises(ValueError, match='crafter_score'):
    crafter_env.crafter_score(rates)


def test_achievement_names_match_package():
  assert crafter_env.ACHIEVEMENTS == tuple(crafter.constants.achievements)


# 64x64 is the default of every other test here; a reset costs ~1.5 s.
@pytest.mark.parametrize('size', [(48, 80), (16, 16)])
def test_spaces_and_image_size(size):
  env = wrappers.CheckSpaces(envs.make('crafter_reward', size=size))
  assert env.obs_space['image'].shape == (*size, 3)
  assert env.obs_space['image'].dtype == np.uint8
  space = env.act_space['action']
  assert space.dtype == np.int32 and space.shape == ()
  assert (int(space.low), int(space.high)) == (0, 17)
  obs = rollout(env, [1, 2, 5])
  for step in obs:
    assert step['image'].shape == (*size, 3)
    assert step['image'].dtype == np.uint8
    assert step['reward'].dtype == np.float32
    for key in ('is_first', 'is_last', 'is_terminal'):
      assert step[key].dtype == bool
  assert obs[0]['is_first'] and not obs[1]['is_first']


def test_matches_raw_env_until_death():
  # A random policy dies within a few hundred steps: is_terminal exactly on
  # the step where crafter reports discount 0.
  rng = np.random.default_rng(1)
  actions = rng.integers(0, 17, 2000).tolist()
  ours = rollout(envs.make('crafter_reward', seed=3), actions)
  images, rewards, dones, infos = reference(3, actions)
  assert len(ours) == len(images) < 2000
  for step, image, reward in zip(ours, images, rewards):
    np.testing.assert_array_equal(step['image'], image)
    assert step['reward'] == np.float32(reward)
  assert [bool(s['is_last']) for s in ours] == dones
  assert ours[-1]['is_terminal'] and infos[-1]['discount'] == 0
  assert not any(s['is_terminal'] for s in ours[:-1])
  # Achievement logs: NaN before the last step, then 0/1 as unlocked.
  for step in ours[:-1]:
    assert all(np.isnan(step[k]) for k in NAN_KEYS)
  unlocked = {n: float(c > 0) for n, c in infos[-1]['achievements'].items()}
  assert sum(unlocked.values()) >= 1
  for name, value in unlocked.items():
    assert ours[-1][f'log/achievement_{name}'] == value
  assert ours[-1]['log/return'] == pytest.approx(sum(rewards), abs=1e-5)
  rates = [100 * v for v in unlocked.values()]
  assert ours[-1]['log/crafter_score'] == pytest.approx(
      crafter_env.crafter_score(rates), rel=1e-6)


def test_episode_cap_truncates_and_noreward():
  actions = [0] * 30
  env = envs.make('crafter_noreward', seed=0, episode_length=12)
  ours = rollout(env, actions)
  _, rewards, _, infos = reference(0, actions, length=12)
  assert len(ours) == 13
  assert ours[-1]['is_last'] and not ours[-1]['is_terminal']
  assert all(s['reward'] == 0 for s in ours)
  # The task reward still shows as log/return (health changes when idle).
  assert ours[-1]['log/return'] == pytest.approx(sum(rewards), abs=1e-5)


def test_running_score_and_episode_logger():
  """Through the run loop's Episodes logger: per-episode 0/1 successes and
  the running score over this env's episodes so far."""

  class Logger:
    def __init__(self):
      self.rows = []

    def add(self, metrics, prefix):
      self.rows.append({f'{prefix}/{k}': v for k, v in metrics.items()})

  logger = Logger()
  episodes = common.Episodes(logger)
  env = envs.make('crafter_reward', seed=0, episode_length=40)
  rng = np.random.default_rng(0)
  obs, count = env.step({'reset': True, 'action': np.int32(0)}), 0
  successes = []
  while count < 2:
    episodes(obs, 0)
    if obs['is_last']:
      count += 1
      successes.append([
          float(obs[f'log/achievement_{n}'])
          for n in crafter_env.ACHIEVEMENTS])
    # Moves and 'do' (5): collects saplings and wood within 40 steps.
    action = np.int32(rng.choice([1, 2, 3, 4, 5, 5, 5, 5]))
    obs = env.step({'reset': bool(obs['is_last']), 'action': action})
  assert len(logger.rows) == 2
  for row, success in zip(logger.rows, successes):
    got = [row[f'episode/achievement_{n}_mean']
           for n in crafter_env.ACHIEVEMENTS]
    assert got == success
    assert set(got) <= {0.0, 1.0}
  assert successes[0] != successes[1]  # Seed chosen so that they differ.
  # Episode k reports the score over episodes 1..k (hand-pooled here).
  for k, row in enumerate(logger.rows, 1):
    rates = 100 * np.mean(successes[:k], 0)
    assert row['episode/crafter_score_mean'] == pytest.approx(
        crafter_env.crafter_score(rates), rel=1e-6)


def test_bad_input():
  with pytest.raises(envs.UnknownTaskError, match='crafter_reward'):
    envs.make('crafter_rewards')
  with pytest.raises(envs.OptionError, match='env.crafter.lenght'):
    envs.make('crafter_reward', lenght=3)
  with pytest.raises(envs.OptionError, match='env.crafter.episode_length'):
    envs.make('crafter_reward', episode_length=0)


def test_missing_package(monkeypatch):
  monkeypatch.setitem(sys.modules, 'crafter', None)
  with pytest.raises(envs.MissingPackageError) as info:
    envs.make('crafter_reward')
  message = str(info.value)
  assert 'crafter' in message and 'pip install' in message
  assert '\n' not in message


def test_missing_package_cli(tmp_path):
  # main.py turns it into one line and exit code 2, before the logdir.
  code = (
      'import sys; sys.modules["crafter"] = None; '
      'sys.argv = ["main.py", "--task", "crafter_reward", "--logdir", '
      f'{str(tmp_path / "run")!r}]; '
      'sys.path.insert(0, "dreamerv3"); import main; main.cli()')
  proc = subprocess.run(
      [sys.executable, '-c', code], cwd=ROOT, capture_output=True, text=True,
      timeout=120)
  assert proc.returncode == 2, proc.stderr[-2000:]
  lines = proc.stderr.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith('Error: crafter tasks need')
  assert not (tmp_path / 'run').exists()


@pytest.mark.slow
def test_main_crafter_debug_run(tmp_path):
  """A few hundred steps through main.py; short episodes so that several
  end and log their achievements. ~2 min of CPU, mostly XLA compile."""
  logdir = tmp_path / 'run'
  env = {**os.environ, 'PYTHONUNBUFFERED': '1'}
  proc = subprocess.run(
      [sys.executable, 'dreamerv3/main.py', '--configs', 'crafter', 'debug',
       '--logdir', str(logdir), '--run.steps', '300', '--env.size', '32,32',
       '--env.crafter.episode_length', '50', '--run.report_every', '0',
       '--jax.cache_dir', str(tmp_path / 'cache')],
      cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
  rows = [json.loads(line) for line in
          (logdir / 'metrics.jsonl').read_text().splitlines()]
  rows = [r for r in rows if 'episode/crafter_score_mean' in r]
  assert len(rows) >= 4
  for row in rows:
    for name in crafter_env.ACHIEVEMENTS:
      assert row[f'episode/achievement_{name}_mean'] in (0.0, 1.0)
    assert 0 <= row['episode/crafter_score_mean'] <= 100


def test_score_script_pools_episodes(tmp_path, capsys):
  """scripts/scores.py --crafter: rates pooled over all episodes of a run,
  and its score by hand."""
  spec = importlib.util.spec_from_file_location(
      'scores', ROOT / 'scripts' / 'scores.py')
  script = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(script)
  rows = []
  for unlocked in (['collect_wood'], ['collect_wood', 'wake_up'], [], []):
    row = {'step': 1, 'episode/score': 0.0}
    for name in crafter_env.ACHIEVEMENTS:
      row[f'episode/achievement_{name}_mean'] = float(name in unlocked)
    rows.append(row)
  rows.insert(2, {'step': 2, 'train/loss': 1.0})
  (tmp_path / 'metrics.jsonl').write_text(
      ''.join(json.dumps(r) + '\n' for r in rows))
  episodes, rates = script.crafter_rates(tmp_path / 'metrics.jsonl')
  assert episodes == 4
  assert rates['collect_wood'] == 50 and rates['wake_up'] == 25
  assert sum(rates.values()) == 75
  # By hand: exp((ln 51 + ln 26) / 22) - 1.
  expected = math.exp((math.log(51) + math.log(26)) / 22) - 1
  assert script.main([str(tmp_path), '--crafter']) == 0
  assert capsys.readouterr().out == (
      f'{tmp_path}: score {expected:.2f}% over 4 episodes\n')
  assert script.main([str(tmp_path), '--achievements', '--json']) == 0
  (run,) = json.loads(capsys.readouterr().out)['runs']
  assert run['score'] == pytest.approx(expected) and run['episodes'] == 4
  assert run['rates'] == rates
