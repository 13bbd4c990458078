"""Runs a replay-method study: dreamerv3/main.py once per (method, seed).

  python scripts/study.py --root ~/logdir/study \\
      --methods uniform uncertainty recency --seeds 0 1 2 \\
      --configs cartpole --parallel 2 -- --run.steps 2e4
  python scripts/scores.py ~/logdir/study --plot study.png

Each run writes ROOT/<method>/seed<k> with `--configs <configs> <method>
--seed k` plus the flags after `--`; a method is a config block name
(uniform, uncertainty, uncertainty_inf, uncertainty_caching, priority,
recency, xp_replay). Runs that finished (a `done` marker written when
main.py exits cleanly) are skipped, unfinished ones resume from their
checkpoint. Output of each run goes to its logdir's study.log.
"""

import argparse
import os
import pathlib
import subprocess
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent


def command(args, method, seed, logdir):
  return [sys.executable, str(ROOT / 'dreamerv3' / 'main.py'),
          '--configs', *args.configs, method, '--seed', str(seed),
          '--logdir', str(logdir), *args.extra]


def main(argv=None):
  argv = sys.argv[1:] if argv is None else list(argv)
  extra = []
  if '--' in argv:
    extra = argv[argv.index('--') + 1:]
    argv = argv[:argv.index('--')]
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--root', required=True)
  parser.add_argument('--methods', nargs='+', required=True)
  parser.add_argument('--seeds', nargs='+', type=int, default=[0, 1, 2])
  parser.add_argument('--configs', nargs='*', default=[])
  parser.add_argument('--parallel', type=int, default=1)
  parser.add_argument('--dry', action='store_true',
                      help='print the commands only')
  args = parser.parse_args(argv)
  args.extra = extra
  if args.parallel < 1:
    parser.error(f'--parallel must be at least 1, got {args.parallel}')
  blocks = _blocks()
  for name in [*args.configs, *args.methods]:
    if name not in blocks:
      parser.error(f"Unknown config block '{name}'")

  root = pathlib.Path(os.path.expanduser(args.root))
  todo = []
  for method in args.methods:
    for seed in args.seeds:
      logdir = root / method / f'seed{seed}'
      if (logdir / 'done').exists():
        print(f'Skipping finished {logdir}')
        continue
      todo.append((method, seed, logdir))
  if args.dry:
    for method, seed, logdir in todo:
      print(' '.join(command(args, method, seed, logdir)))
    return 0

  running, failed = [], []
  while todo or running:
    while todo and len(running) < args.parallel:
      method, seed, logdir = todo.pop(0)
      logdir.mkdir(parents=True, exist_ok=True)
      cmd = command(args, method, seed, logdir)
      print(f'Starting {method} seed {seed}: {" ".join(cmd)}', flush=True)
      log = open(logdir / 'study.log', 'a')
      proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT,
                              cwd=str(ROOT))
      running.append((proc, log, method, seed, logdir, time.time()))
    time.sleep(1.0)
    for entry in list(running):
      proc, log, method, seed, logdir, start = entry
      if proc.poll() is None:
        continue
      running.remove(entry)
      log.close()
      minutes = (time.time() - start) / 60
      if proc.returncode == 0:
        (logdir / 'done').write_text(f'{time.time()}\n')
        print(f'Finished {method} seed {seed} in {minutes:.1f} min',
              flush=True)
      else:
        failed.append(logdir)
        print(f'FAILED {method} seed {seed} (exit {proc.returncode}); see '
              f'{logdir / "study.log"}', flush=True)
  if failed:
    print(f'{len(failed)} run(s) failed.')
    return 1
  print(f'All runs done. Plot: python scripts/scores.py {root} '
        f'--plot study.png')
  return 0


def _blocks():
  import ruamel.yaml as yaml
  return yaml.YAML(typ='safe').load((ROOT / 'configs.yaml').read_text())


if __name__ == '__main__':
  sys.exit(main())
