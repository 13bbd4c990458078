"""Runs a study: dreamerv3/main.py once per (task, method, seed).

  python scripts/study.py --root ~/logdir/study \\
      --methods uniform uncertainty recency --seeds 0 1 2 \\
      --configs cartpole --parallel 2 -- --run.steps 2e4
  python scripts/study.py --root ~/logdir/xp --name "DreamerV3-XP" \\
      --description "disagreement vs plain" --configs bsuite \\
      --tasks bsuite_catch/0 bsuite_cartpole/0 \\
      --methods uniform disagreement_exp_decay --seeds 0 1 --slurm
  python scripts/scores.py ~/logdir/study --plot study.png

Each run gets `--configs <configs> <method> --seed k` (and `--task T` with
--tasks) plus the flags after `--`; a method is a config block name
(uniform, uncertainty, xp_replay, disagreement_exp_decay, ...). Its logdir
is ROOT/<method>/seed<k>, or ROOT/<task>/<method>/seed<k> when --tasks names
several tasks (a '/' in a task name becomes '-'). Runs that finished (a
`done` marker written when main.py exits cleanly) are skipped, unfinished
ones resume from their checkpoint. Output of each run goes to its logdir's
study.log (with --slurm to ROOT/slurm/<job>_<index>.out).

--name and --description are stored with the study's axes in
ROOT/experiment.json (scripts/scores.py prints them with the results).
--slurm runs nothing: it writes ROOT/slurm/<name>.runs (the unfinished
runs' flags, one per line) and ROOT/slurm/<name>.sh, which submits them as a
job array through scripts/slurm/array.sbatch, and prints its path; run it
to submit.
"""

import argparse
import json
import os
import pathlib
import re
import shlex
import subprocess
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent


def command(args, run, python=None):
  task, method, seed, logdir = run
  task_flags = ['--task', task] if task else []
  return [python or sys.executable, str(ROOT / 'dreamerv3' / 'main.py'),
          '--configs', *args.configs, method, *task_flags,
          '--seed', str(seed), '--logdir', str(logdir), *args.extra]


def parse(argv):
  argv = list(argv)
  extra = []
  if '--' in argv:
    extra = argv[argv.index('--') + 1:]
    argv = argv[:argv.index('--')]
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--root', required=True)
  parser.add_argument('--methods', nargs='+', required=True)
  parser.add_argument('--seeds', nargs='+', type=int, default=[0, 1, 2])
  parser.add_argument('--tasks', nargs='+', default=[],
                      help='tasks (--task of main.py); default: the configs')
  parser.add_argument('--configs', nargs='*', default=[])
  parser.add_argument('--parallel', type=int, default=1)
  parser.add_argument('--name', default='',
                      help='experiment name, stored in ROOT/experiment.json')
  parser.add_argument('--description', default='')
  parser.add_argument('--dry', action='store_true',
                      help='print the commands only')
  parser.add_argument('--slurm', action='store_true',
                      help='write a job array submit script instead of running')
  parser.add_argument('--slurm_time', default='2-00:00:00')
  parser.add_argument('--slurm_gpus', type=int, default=1)
  parser.add_argument('--slurm_cpus', type=int, default=8)
  parser.add_argument('--slurm_partition', default='')
  args = parser.parse_args(argv)
  args.extra = extra
  if args.parallel < 1:
    parser.error(f'--parallel must be at least 1, got {args.parallel}')
  blocks = _blocks()
  for name in [*args.configs, *args.methods]:
    if name not in blocks:
      parser.error(f"Unknown config block '{name}'")
  return args


def runs(args, root):
  """(task, method, seed, logdir) of every run; task None without
  --tasks."""
  tasks = args.tasks or [None]
  out = []
  for task in tasks:
    base = root / task.replace('/', '-') if len(tasks) > 1 else root
    for method in args.methods:
      for seed in args.seeds:
        out.append((task, method, seed, base / method / f'seed{seed}'))
  return out


def write_experiment(args, root):
  """ROOT/experiment.json: name, description and the study's axes (the
  creation time of an earlier file is kept)."""
  path = root / 'experiment.json'
  created = time.strftime('%Y-%m-%dT%H:%M:%S')
  if path.exists():
    try:
      created = json.loads(path.read_text()).get('created', created)
    except (OSError, ValueError):
      pass
  info = {
      'name': args.name, 'description': args.description,
      'tasks': args.tasks, 'methods': args.methods, 'seeds': args.seeds,
      'configs': args.configs, 'extra': args.extra, 'created': created,
      'updated': time.strftime('%Y-%m-%dT%H:%M:%S')}
  root.mkdir(parents=True, exist_ok=True)
  tmp = root / 'experiment.json.tmp'
  tmp.write_text(json.dumps(info, indent=1) + '\n')
  os.replace(tmp, path)
  return path


def slurm_script(args, root, todo):
  """Writes ROOT/slurm/<name>.runs, one line of main.py flags per run, and
  ROOT/slurm/<name>.sh, which submits them as one job array through
  scripts/slurm/array.sbatch (requeued on time limit, resumed from each
  run's logdir; sbatch options given to it are passed on). Returns the
  path of the .sh."""
  name = re.sub(r'[^\w.-]+', '-', args.name or root.name).strip('-') or 'study'
  folder = root / 'slurm'
  folder.mkdir(parents=True, exist_ok=True)
  runs = folder / f'{name}.runs'
  runs.write_text(''.join(
      ' '.join(shlex.quote(a) for a in command(args, run)[2:]) + '\n'
      for run in todo))
  options = [
      f'--job-name={name}', f'--array=0-{len(todo) - 1}',
      f'--time={args.slurm_time}', f'--cpus-per-task={args.slurm_cpus}',
      f'--output={folder}/%A_%a.out']
  if args.slurm_gpus:
    options.append(f'--gres=gpu:{args.slurm_gpus}')
  if args.slurm_partition:
    options.append(f'--partition={args.slurm_partition}')
  q = lambda x: shlex.quote(str(x))
  lines = [
      '#!/usr/bin/env bash',
      f'# Submits {len(todo)} unfinished run(s) of this study as one job '
      'array; extra',
      '# arguments are sbatch options. A finished run (logdir/done) is '
      'skipped.',
      'set -euo pipefail',
      f'cd {q(ROOT)}',
      f'export DREAMER_ROOT={q(ROOT)} RUNS={q(runs)}',
      'exec sbatch ' + ' '.join(q(o) for o in options) +
      ' "$@" scripts/slurm/array.sbatch',
      '']
  path = folder / f'{name}.sh'
  path.write_text('\n'.join(lines))
  path.chmod(0o755)
  return path


def main(argv=None):
  args = parse(sys.argv[1:] if argv is None else argv)
  root = pathlib.Path(os.path.expanduser(args.root))
  todo = []
  for run in runs(args, root):
    if (run[3] / 'done').exists():
      print(f'Skipping finished {run[3]}')
      continue
    todo.append(run)
  if args.dry:
    for run in todo:
      print(' '.join(shlex.quote(a) for a in command(args, run)))
    return 0
  if args.name or args.description:
    write_experiment(args, root)
  if args.slurm:
    if not todo:
      print('All runs finished already; no script written.')
      return 0
    path = slurm_script(args, root, todo)
    print(f'{len(todo)} runs. Submit with: bash {path}')
    print(path)
    return 0

  running, failed = [], []
  while todo or running:
    while todo and len(running) < args.parallel:
      run = todo.pop(0)
      task, method, seed, logdir = run
      logdir.mkdir(parents=True, exist_ok=True)
      cmd = command(args, run)
      label = f'{task + " " if task else ""}{method} seed {seed}'
      print(f'Starting {label}: {" ".join(cmd)}', flush=True)
      log = open(logdir / 'study.log', 'a')
      proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT,
                              cwd=str(ROOT))
      running.append((proc, log, label, logdir, time.time()))
    time.sleep(1.0)
    for entry in list(running):
      proc, log, label, logdir, start = entry
      if proc.poll() is None:
        continue
      running.remove(entry)
      log.close()
      minutes = (time.time() - start) / 60
      if proc.returncode == 0:
        (logdir / 'done').write_text(f'{time.time()}\n')
        print(f'Finished {label} in {minutes:.1f} min', flush=True)
      else:
        failed.append(logdir)
        print(f'FAILED {label} (exit {proc.returncode}); see '
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
