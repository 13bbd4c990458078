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

Named studies (--study NAME) fill in the methods, seeds and root (given
ones override):
  learning  the learning suite that checks the agent still learns: each
            block of SUITE (cartpole, pendulum, minatar; --methods picks
            some) with its seeds and --run.steps budget into
            ROOT/<block>/seed<k>, then a report of each run's mean of the
            last 10 training episodes that ended by each marked env step
            and, for a task with a hold level, the lowest such mean after
            the run first reached it. --report only prints the report.
            Hours of CPU; figures go to docs/results.md.
  run_standard_dreamer, run_replay_buffer_experiment,
  run_latent_disagreement_experiment_exp_decay,
  run_latent_disagreement_experiment_ema
            the DreamerV3-XP experiments: their method block (uniform,
            xp_replay, disagreement_exp_decay, disagreement_slope_ema),
            seed 0, ROOT ~/logdir/experiments/<name>, --name <name>.

  python scripts/study.py --study learning --root ~/logdir/suite --parallel 2
  python scripts/study.py --study learning --root ~/logdir/suite --report
  python scripts/study.py --study run_standard_dreamer --seeds 0 1 \\
      --configs atari100k size12m --tasks atari100k_krull atari100k_boxing
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

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parent.parent

# The DreamerV3-XP experiments: study name -> the method blocks it runs.
EXPERIMENTS = {
    'run_standard_dreamer': ['uniform'],
    'run_replay_buffer_experiment': ['xp_replay'],
    'run_latent_disagreement_experiment_exp_decay': ['disagreement_exp_decay'],
    'run_latent_disagreement_experiment_ema': ['disagreement_slope_ema'],
}
# The learning suite: config block -> seeds, env-step budget, report marks,
# optional hold level.
SUITE = {
    'cartpole': dict(seeds=[5, 6, 7], steps=14000, marks=[4000, 8000, 14000],
                     hold=400),
    'pendulum': dict(seeds=[0, 1, 2], steps=10000,
                     marks=[2000, 4000, 6000, 8000, 10000]),
    'minatar': dict(seeds=[0], steps=40000,
                    marks=[10000, 20000, 30000, 40000]),
}
STUDIES = ('learning', *EXPERIMENTS)


def command(args, run, python=None):
  task, method, seed, logdir = run
  task_flags = ['--task', task] if task else []
  if isinstance(seed, tuple):  # All seeds in one program (run.seeds).
    seed_flags = ['--seed', str(seed[0]),
                  '--run.seeds', ','.join(map(str, seed))]
  else:
    seed_flags = ['--seed', str(seed)]
  return [python or sys.executable, str(ROOT / 'dreamerv3' / 'main.py'),
          '--configs', *args.configs, method, *task_flags,
          *seed_flags, '--logdir', str(logdir), *args.extra]


def parse(argv):
  argv = list(argv)
  extra = []
  if '--' in argv:
    extra = argv[argv.index('--') + 1:]
    argv = argv[:argv.index('--')]
  parser = argparse.ArgumentParser(
      description=__doc__.split('\n')[0],
      formatter_class=argparse.RawDescriptionHelpFormatter,
      epilog=__doc__[__doc__.index('Named studies'):])
  parser.add_argument('--study', choices=STUDIES, metavar='NAME',
                      help=f'a named study: {", ".join(STUDIES)} (below)')
  parser.add_argument('--root', default='')
  parser.add_argument('--methods', nargs='+', default=[])
  parser.add_argument('--seeds', nargs='+', type=int, default=None,
                      help='default: 0 1 2, or the named study\'s')
  parser.add_argument('--tasks', nargs='+', default=[],
                      help='tasks (--task of main.py); default: the configs')
  parser.add_argument('--configs', nargs='*', default=[])
  parser.add_argument('--parallel', type=int, default=1)
  parser.add_argument('--one_process', action='store_true',
                      help='train the seeds of each method as one program '
                      '(run.seeds): one run per method in ROOT/<method>, '
                      'each seed in ROOT/<method>/seed<k> as before')
  parser.add_argument('--name', default='',
                      help='experiment name, stored in ROOT/experiment.json')
  parser.add_argument('--description', default='')
  parser.add_argument('--report', action='store_true',
                      help='--study learning: only print its report')
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
  named_study(parser, args)
  if not args.root:
    parser.error('--root is required')
  if not args.methods:
    parser.error('--methods is required (or --study NAME)')
  blocks = _blocks()
  for name in [*args.configs, *args.methods]:
    if name not in blocks:
      parser.error(f"Unknown config block '{name}'")
  return args


def named_study(parser, args):
  """Fills in what --study decides where not given, and refuses what it
  does not take. The learning suite keeps seeds None for its blocks' own."""
  if args.report and args.study != 'learning':
    parser.error('--report is for --study learning; report other studies '
                 'with python scripts/scores.py ROOT')
  if args.study == 'learning':
    for option in ('tasks', 'configs', 'slurm'):
      if getattr(args, option):
        parser.error(f'--study learning runs its blocks without --{option}')
    args.methods = args.methods or list(SUITE)
    for name in args.methods:
      if name not in SUITE:
        parser.error(f"'{name}' is not in the learning suite: choose from "
                     f"{', '.join(SUITE)}")
    return
  if args.study:
    args.methods = args.methods or EXPERIMENTS[args.study]
    args.seeds = args.seeds or [0]
    args.root = args.root or f'~/logdir/experiments/{args.study}'
    args.name = args.name or args.study
  args.seeds = [0, 1, 2] if args.seeds is None else args.seeds


def runs(args, root):
  """(task, method, seed, logdir) of every run; task None without
  --tasks."""
  tasks = args.tasks or [None]
  out = []
  for task in tasks:
    base = root / task.replace('/', '-') if len(tasks) > 1 else root
    for method in args.methods:
      if args.one_process and len(args.seeds) > 1:
        out.append((task, method, tuple(args.seeds), base / method))
        continue
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
  if args.study == 'learning':
    return learning(args, root)
  return execute(args, root)


def execute(args, root):
  """Runs (or with --dry prints, with --slurm submits) the unfinished runs;
  returns the exit status."""
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


# The learning suite.

def learning(args, root):
  """Runs each block of the suite to its budget (one study per block),
  then prints the report."""
  failed = 0
  if not args.report:
    for name in args.methods:
      spec = SUITE[name]
      block = argparse.Namespace(**{
          **vars(args), 'methods': [name],
          'seeds': args.seeds or spec['seeds'],
          'extra': ['--run.steps', str(spec['steps']), *args.extra]})
      failed |= execute(block, root)
  if not args.dry:
    print(learning_report(root, args.methods, args.seeds))
  return failed


def last_mean_at(xs, ys, step, last=10):
  """Mean of the last `last` episodes that ended at or before `step`."""
  ys = np.asarray(ys)[np.asarray(xs) <= step]
  return float(ys[-last:].mean()) if len(ys) else float('nan')


def held_min(xs, ys, level, last=10):
  """Lowest running last-10 mean after it first reached `level` (None if
  it never did)."""
  ys = np.asarray(ys, np.float64)
  means = [ys[max(0, i + 1 - last):i + 1].mean() for i in range(len(ys))]
  reached = [i for i, m in enumerate(means) if m >= level]
  return float(min(means[reached[0]:])) if reached else None


def learning_report(root, names, seeds=None):
  """Markdown tables, one per block: each seed's last-10 mean at the
  block's marks (and the lowest one after its hold level)."""
  sys.path.insert(0, str(ROOT / 'scripts'))
  import scores
  lines = []
  for name in names:
    spec = SUITE[name]
    header = ['run', 'env steps'] + [f'@{m:,}' for m in spec['marks']]
    if spec.get('hold'):
      header.append(f'min after {spec["hold"]}')
    lines.append(f'## {name}')
    lines.append('| ' + ' | '.join(header) + ' |')
    lines.append('|' + ' --- |' * len(header))
    for seed in seeds or spec['seeds']:
      logdir = root / name / f'seed{seed}'
      run = scores.load_run(logdir) if (logdir / 'scores.jsonl').exists() \
          else None
      if run is None:
        lines.append(f'| seed {seed} | not run |')
        continue
      row = [f'seed {seed}', f'{int(run.steps):,}']
      # A mark the run has not reached has no value yet (a run still going).
      row += [f'{last_mean_at(run.xs, run.ys, m):.1f}' if m <= run.steps
              else '-' for m in spec['marks']]
      if spec.get('hold'):
        low = held_min(run.xs, run.ys, spec['hold'])
        row.append('never reached' if low is None else f'{low:.1f}')
      lines.append('| ' + ' | '.join(row) + ' |')
    lines.append('')
  return '\n'.join(lines)


def _blocks():
  import ruamel.yaml as yaml
  return yaml.YAML(typ='safe').load((ROOT / 'configs.yaml').read_text())


if __name__ == '__main__':
  sys.exit(main())
