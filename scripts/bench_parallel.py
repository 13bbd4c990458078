"""`train` vs `parallel` on one config: env steps/s, updates/s and the
learner's wait fraction, from short runs taken back to back.

  python scripts/bench_parallel.py --root /tmp/bench --steps 3000 \
      --duration 300 -- --configs cartpole

Each script runs in a fresh logdir ROOT/<script>-<rep> with the extra
arguments after `--`. Figures come from metrics.jsonl, over the log lines
after the first one that has train metrics (so compilation and the prefill
are left out):
- env_fps, ups: env steps and updates between those lines / their seconds.
- learner_wait: the share of wall time the learner did not train. train:
  fps/frac_env (the loop steps the envs while no update runs); parallel:
  parallel/learner_wait_frac (waiting on the replay server's samples).
"""

import argparse
import json
import pathlib
import shutil
import subprocess
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent


def run(script, logdir, steps, duration, extra):
  if logdir.exists():
    shutil.rmtree(logdir)
  cmd = [sys.executable, 'dreamerv3/main.py', '--script', script,
         '--logdir', str(logdir), '--run.steps', str(steps),
         '--run.duration', str(duration), '--run.log_every', '15',
         '--run.report_every', '0', '--run.video_every', '0',
         '--run.save_every', '100000', *extra]
  start = time.time()
  proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
  if proc.returncode:
    raise RuntimeError(proc.stdout[-2000:] + proc.stderr[-2000:])
  return time.time() - start


def summarize(script, logdir):
  lines = [json.loads(l) for l in (logdir / 'metrics.jsonl').read_text()
           .splitlines() if l.strip()]
  logs = [l for l in lines if 'fps/env' in l]
  trained = [l for l in logs if l.get('fps/train', 0) > 0]
  if len(trained) < 2:
    return None
  use = trained[1:]
  wait_key = 'fps/frac_env' if script == 'train' else \
      'parallel/learner_wait_frac'
  mean = lambda key: sum(l.get(key, 0) for l in use) / len(use)
  out = {
      'env_fps': mean('fps/env'), 'ups': mean('fps/train'),
      'learner_wait': mean(wait_key),
      'host_share': mean('learner/wait_frac'),
      'steps': use[-1]['step'], 'lines': len(use)}
  if script == 'parallel':
    for key in ('parallel/actor_wait_frac', 'parallel/insert_wait_frac',
                'parallel/actor_batch', 'replay/insert_wait',
                'replay/sample_wait'):
      out[key] = mean(key)
  return out


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument('--root', default='/tmp/bench_parallel')
  parser.add_argument('--steps', type=int, default=3000)
  parser.add_argument('--duration', type=int, default=300)
  parser.add_argument('--reps', type=int, default=1)
  parser.add_argument('--scripts', default='train,parallel')
  parser.add_argument('extra', nargs='*')
  args = parser.parse_args()
  root = pathlib.Path(args.root)
  for rep in range(args.reps):
    for script in args.scripts.split(','):
      logdir = root / f'{script}-{rep}'
      wall = run(script, logdir, args.steps, args.duration, args.extra)
      result = summarize(script, logdir)
      print(json.dumps({'script': script, 'rep': rep, 'wall': round(wall),
                        **(result or {})}), flush=True)


if __name__ == '__main__':
  main()
