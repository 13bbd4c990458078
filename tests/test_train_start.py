"""Training starts where the reference starts it: once replay holds
batch_size * batch_length sequence starts, whatever the env count."""

import json
import pathlib
import subprocess
import sys

import elements
import pytest

from embodied.core.replay import Replay
from embodied.run import common
from tests.helpers import replay_step

ROOT = pathlib.Path(__file__).resolve().parent.parent


def args(envs, batch_size=16, batch_length=64, replay_context=1, fill=0):
  return elements.Config(
      envs=envs, batch_size=batch_size, batch_length=batch_length,
      replay_context=replay_context, train_fill=fill)


def test_fill_steps_are_the_references_counts():
  # The counts the reference's rule gives at its defaults (1 env: 1088
  # agent steps; 16 envs: 2048).
  assert common.fill_steps(args(1)) == 1088
  assert common.fill_steps(args(16)) == 2048
  # run.train_fill replaces it, but not below one sequence per env.
  assert common.fill_steps(args(4, fill=100)) == 4 * 65
  assert common.fill_steps(args(1, fill=5000)) == 5000


@pytest.mark.parametrize('envs,batch_size,batch_length,context', [
    (1, 4, 8, 1), (3, 4, 8, 1), (16, 2, 8, 0), (20, 16, 64, 1),
    (7, 3, 5, 2)])
def test_replay_holds_the_batch_in_starts_exactly_at_the_fill(
    envs, batch_size, batch_length, context):
  """Envs stepping together into one replay (chunks small enough that
  streams cross chunk boundaries): at the fill count it holds at least
  batch_size * batch_length sequence starts, one round of env steps
  earlier it holds fewer."""
  a = args(envs, batch_size, batch_length, context)
  length = batch_length + context
  replay = Replay(length, 10 ** 6, chunksize=length + 3)
  fill = common.fill_steps(a)
  need = batch_size * batch_length
  steps, t = 0, 0
  while steps < fill:
    if steps + envs >= fill:  # The last round before training may start.
      assert len(replay.sampler) < need
    for worker in range(envs):
      replay.add(replay_step(worker, t), worker)
    steps += envs
    t += 1
  assert len(replay.sampler) >= need
  assert len(replay.sampler) < need + envs
  batch = replay.sample(batch_size)
  assert batch['t'].shape == (batch_size, length)


GYM_MODULE = """
import gymnasium
import numpy as np

BUILT = [0]


class Counter(gymnasium.Env):
  \"\"\"Counts to 10, then terminates (reward 1 per step). The sixth env
  built in the process (member 0's env 5 in a run that builds its envs in
  order) fails on its third step, once.\"\"\"

  observation_space = gymnasium.spaces.Box(0, 10, (1,), np.float32)
  action_space = gymnasium.spaces.Discrete(2)

  def __init__(self):
    self.index = BUILT[0]
    BUILT[0] += 1
    self.steps = 0

  def reset(self, seed=None, options=None):
    super().reset(seed=seed)
    self.t = 0
    return np.zeros(1, np.float32), {}

  def step(self, action):
    self.steps += 1
    if self.index == 5 and self.steps == 3:
      raise RuntimeError('env 5 failed')
    self.t += 1
    return np.full(1, self.t, np.float32), 1.0, self.t >= 10, False, {}


gymnasium.register('Counter-v0', entry_point=Counter)
"""


@pytest.fixture(scope='module')
def two_seeds_many_envs(tmp_path_factory, jax_cache):
  """Two seeds as one program with 20 envs each, their replays on the
  device, buffer-wide uncertainty refreshes, evaluation phases and one
  env that crashes. debug: batch 4 x 8, context 1, so training starts at
  4 * 8 + 20 * 8 = 192 steps; at 300 steps and ratio 16 that is
  (300 - 192) * 16 // 32 = 54 updates."""
  root = tmp_path_factory.mktemp('two_seeds')
  (root / 'counter_env.py').write_text(GYM_MODULE)
  logdir = root / 'run'
  cmd = [sys.executable, 'dreamerv3/main.py', '--configs', 'debug',
         'uncertainty_caching', '--task', 'gym_counter_env:Counter-v0',
         '--logdir', str(logdir), '--script', 'train_eval',
         '--run.envs', '20', '--run.seeds', '2', '--run.steps', '300',
         '--replay.device', 'accelerator', '--replay.cache_every', '20',
         '--run.eval_every', '1', '--run.eval_eps', '2',
         '--run.log_every', '0', '--run.report_every', '0',
         '--run.video_every', '0', '--jax.platform', 'cpu',
         '--logger.outputs', 'jsonl', '--jax.cache_dir', str(jax_cache)]
  env = dict(__import__('os').environ, PYTHONPATH=str(root))
  out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True,
                       timeout=900, env=env)
  assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
  rows = {}
  for seed in (0, 1):
    rows[seed] = [json.loads(l)
                  for l in (logdir / f'seed{seed}' / 'metrics.jsonl').open()]
  return out, rows


def test_many_envs_per_seed_train_from_the_fill(two_seeds_many_envs):
  """Before, 20 envs crashed at the first train step (no complete sequence
  to sample); now each seed trains from the reference's fill count."""
  _, rows = two_seeds_many_envs
  for seed in (0, 1):
    stats = [r for r in rows[seed] if 'replay/samples' in r][-1]
    assert stats['replay/items'] == 20 * (15 - 8)
    # The prefetched next batch is sampled too.
    assert stats['replay/samples'] in (54 * 4, 55 * 4), stats


def test_each_seed_refreshes_its_own_buffer(two_seeds_many_envs):
  _, rows = two_seeds_many_envs
  for seed in (0, 1):
    items = [r['replay/cache_items'] for r in rows[seed]
             if 'replay/cache_items' in r]
    assert items and all(n > 0 for n in items)


def test_a_crashed_env_restarts_without_stopping_the_other_seed(
    two_seeds_many_envs):
  out, rows = two_seeds_many_envs
  assert out.stdout.count('Warning: restarting env') + out.stderr.count(
      'Warning: restarting env') == 1
  episodes = {seed: [(r['episode/score'], r['episode/length'])
                     for r in rows[seed] if 'episode/score' in r]
              for seed in (0, 1)}
  # Full episodes score 10 in 10 steps; the crash cut one of seed 0's
  # short (its last step has no reward), and none of seed 1's.
  cut = [e for e in episodes[0] if e != (10.0, 10.0)]
  assert len(cut) == 1 and cut[0][0] == cut[0][1] - 1
  assert set(episodes[1]) == {(10.0, 10.0)}
  assert len(episodes[1]) >= 20 and len(episodes[0]) >= 20


def test_each_seed_evaluates_its_own_episodes(two_seeds_many_envs):
  _, rows = two_seeds_many_envs
  for seed in (0, 1):
    evals = [r for r in rows[seed] if 'eval_episode/score' in r]
    # At least run.eval_eps per phase for each seed (one eval env each).
    assert len(evals) >= 2


class FakeDriver:
  """Member 0's env ends an episode every step, member 1's every 5."""

  def __init__(self, episodes):
    self.episodes = episodes
    self.t = 0

  def __call__(self, policy, steps=0):
    for _ in range(steps):
      self.t += 1
      self.episodes[0].count += 1
      self.episodes[1].count += self.t % 5 == 0


def test_evaluation_counts_episodes_per_seed():
  class Tracker:
    count = 0
  episodes = [Tracker(), Tracker()]
  driver = FakeDriver(episodes)
  common.play_episodes(driver, None, episodes, 3)
  # A total of 2 x 3 would have stopped at step 5 with seed 1 at 1.
  assert episodes[1].count == 3 and driver.t == 15
  common.play_episodes(driver, None, episodes, 1)
  assert episodes[1].count == 4
