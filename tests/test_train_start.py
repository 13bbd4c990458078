"""Training starts where the reference starts it: once replay holds
batch_size * batch_length sequence starts, whatever the env count."""

import json
import subprocess
import sys

import elements
import numpy as np
import pytest

from embodied.core.replay import Replay
from embodied.run import common
from tests.test_replay import make_step

ROOT = __import__('pathlib').Path(__file__).resolve().parent.parent


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
      replay.add(make_step(worker, t), worker)
    steps += envs
    t += 1
  assert len(replay.sampler) >= need
  assert len(replay.sampler) < need + envs
  batch = replay.sample(batch_size)
  assert batch['t'].shape == (batch_size, length)


def test_many_envs_per_seed_train_from_the_fill(tmp_path, jax_cache):
  """20 envs for each of 2 seeds through the first updates (before, 20 envs
  crashed at the first train step: no complete sequence to sample). debug:
  batch 4 x 8, context 1, so training starts at 4 * 8 + 20 * 8 = 192 steps;
  at 300 steps and ratio 16 that is (300 - 192) * 16 // 32 = 54 updates."""
  logdir = tmp_path / 'run'
  cmd = [sys.executable, 'dreamerv3/main.py', '--configs', 'debug',
         '--task', 'dummy_vector', '--logdir', str(logdir),
         '--run.envs', '20', '--run.seeds', '2', '--run.steps', '300',
         '--run.log_every', '0', '--run.report_every', '0',
         '--run.video_every', '0', '--jax.platform', 'cpu',
         '--logger.outputs', 'jsonl', '--jax.cache_dir', str(jax_cache)]
  out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True,
                       timeout=600)
  assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
  for seed in (0, 1):
    rows = [json.loads(l)
            for l in (logdir / f'seed{seed}' / 'metrics.jsonl').open()]
    stats = [r for r in rows if 'replay/samples' in r][-1]
    assert stats['replay/items'] == 20 * (15 - 8)
    # The prefetched next batch is sampled too.
    assert stats['replay/samples'] in (54 * 4, 55 * 4), stats
