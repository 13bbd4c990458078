"""A small agent learns dummy_vector well above chance in a few CPU minutes.

dummy_vector shows a target among 6 actions; the next reward is 1 if the
action matched it. Episodes have 20 rewarded steps (debug block), so a
random policy scores 20 / 6 = 3.3 per episode and a perfect one 20.
"""

import json
import pathlib
import subprocess
import sys

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parent.parent
RANDOM = 20 / 6

# The debug block with a somewhat larger model, bigger batches, a high
# train ratio and a high learning rate. About 2.3k updates in total.
ARGS = [
    '--configs', 'debug', '--task', 'dummy_vector', '--seed', '0',
    '--run.steps', '2500', '--run.train_ratio', '256',
    '--batch_size', '16', '--batch_length', '16',
    r'--.*\.units', '64', '--agent.dyn.deter', '64',
    '--agent.dyn.hidden', '32', '--agent.dyn.stoch', '8',
    '--agent.dyn.classes', '8',
    '--agent.opt.lr', '1e-3', '--agent.opt.warmup', '0',
    # Report passes would draw from the agent's RNG at wall-clock times.
    '--run.report_every', '0', '--run.log_every', '20',
]


def test_learns_dummy_vector(tmp_path):
  logdir = tmp_path / 'run'
  proc = subprocess.run(
      [sys.executable, 'dreamerv3/main.py', *ARGS, '--logdir', str(logdir)],
      cwd=ROOT, capture_output=True, text=True, timeout=900)
  assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
  lines = [json.loads(l) for l in (logdir / 'scores.jsonl').open()]
  scores = [l['episode/score'] for l in lines if 'episode/score' in l]
  # 2 envs x 2500 steps / 21 steps per episode.
  assert len(scores) >= 110, len(scores)
  first, last = np.mean(scores[:10]), np.mean(scores[-20:])
  print(f'first 10 episodes {first:.2f}, last 20 episodes {last:.2f}')
  # The first episodes run before any training: about random.
  assert first < 2 * RANDOM, scores[:10]
  # The last ones clearly beat random (it reaches about 14 of 20).
  assert last > 2 * RANDOM, scores[-20:]
