"""`--script train` vs `--script parallel` on one config: env steps/s,
updates/s and the learner's wait fraction, from short runs taken back to
back.

  python scripts/bench.py parallel --bench.root /tmp/bench --configs cartpole
  python scripts/bench.py parallel --configs atari100k size1m \\
      --task atari100k_pong --run.steps 1500 --run.duration 360

Each script runs dreamerv3/main.py in a fresh logdir ROOT/<script>-<rep>
with --run.steps 3000 --run.duration 300 --run.log_every 15, no reports,
videos or periodic checkpoints, then the config flags (which may override
those). Figures come from its metrics.jsonl, over the log lines after the
first one that has train metrics (so compilation and the prefill are left
out), each as KEY[<script>-<rep>]:
- env_fps, ups: env steps and updates per second.
- learner_wait: the share of wall time the learner did not train. train:
  fps/frac_env (the loop steps the envs while no update runs); parallel:
  parallel/learner_wait_frac (waiting on the replay server's samples).
- host_share: learner/wait_frac; steps: the last line's step; lines: how
  many lines the means are over (0: too short a run for any figure).
"""

import json
import pathlib
import shutil
import subprocess
import sys
import time

from scripts.benchmarks import common

OPTIONS = {
    'root': ('/tmp/bench_parallel', 'folder of the runs (emptied first)'),
    'scripts': ('train,parallel', 'main.py scripts to run, in order'),
    'reps': (1, 'runs of each script'),
}
# Before the config flags, which may override them.
RUN_FLAGS = ['--run.steps', '3000', '--run.duration', '300',
             '--run.log_every', '15', '--run.report_every', '0',
             '--run.video_every', '0', '--run.save_every', '100000']
PARALLEL_KEYS = ('parallel/actor_wait_frac', 'parallel/insert_wait_frac',
                 'parallel/actor_batch', 'replay/insert_wait',
                 'replay/sample_wait')


def run(options, flags):
  common.parse_config(RUN_FLAGS + flags)  # Bad flags fail before any run.
  root = pathlib.Path(options['root']).expanduser()
  results = {}
  for rep in range(options['reps']):
    for script in options['scripts'].split(','):
      name = f'{script}-{rep}'
      wall = start_run(script, root / name, flags)
      figures = {'wall_s': wall, **summarize(script, root / name)}
      print(f'  {name}: ' + json.dumps(figures), flush=True)
      results.update({f'{k}[{name}]': v for k, v in figures.items()})
  return results


def start_run(script, logdir, flags):
  """Runs main.py to its end; returns its wall seconds."""
  if logdir.exists():
    shutil.rmtree(logdir)
  cmd = [sys.executable, 'dreamerv3/main.py', '--script', script,
         '--logdir', str(logdir), *RUN_FLAGS, *flags]
  start = time.time()
  proc = subprocess.run(cmd, cwd=common.ROOT, capture_output=True, text=True)
  if proc.returncode:
    raise SystemExit(f'{script} failed:\n{proc.stdout[-2000:]}'
                     f'{proc.stderr[-2000:]}')
  return time.time() - start


def summarize(script, logdir):
  """Means over the log lines after the first one with train metrics."""
  lines = [json.loads(l) for l in (logdir / 'metrics.jsonl').read_text()
           .splitlines() if l.strip()]
  logs = [l for l in lines if 'fps/env' in l]
  use = [l for l in logs if l.get('fps/train', 0) > 0][1:]
  if not use:
    return {'lines': 0}
  mean = lambda key: sum(l.get(key, 0) for l in use) / len(use)
  wait_key = 'fps/frac_env' if script == 'train' else \
      'parallel/learner_wait_frac'
  out = {
      'env_fps': mean('fps/env'), 'ups': mean('fps/train'),
      'learner_wait': mean(wait_key),
      'host_share': mean('learner/wait_frac'),
      'steps': use[-1]['step'], 'lines': len(use)}
  if script == 'parallel':
    out.update({key: mean(key) for key in PARALLEL_KEYS})
  return out
