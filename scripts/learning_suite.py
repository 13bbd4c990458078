"""Runs the learning suite that checks the agent still learns, and reports it.

  python scripts/learning_suite.py --root ~/logdir/suite --parallel 2
  python scripts/learning_suite.py --root ~/logdir/suite --only cartpole
  python scripts/learning_suite.py --root ~/logdir/suite --report

Each task runs `dreamerv3/main.py --configs <block> --seed k --run.steps N`
per seed into ROOT/<block>/seed<k> (through scripts/study.py, so finished
runs are skipped and unfinished ones resume). The report gives, per run, the
mean of the last 10 training episodes that ended by each marked env step,
and for tasks with a `hold` level the lowest such mean after the run first
reached it (did it stay there?). Run it after any change to the agent;
figures go to docs/results.md. Not part of the test suite (hours of CPU).
"""

import argparse
import os
import pathlib
import sys

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import scores  # noqa: E402
import study  # noqa: E402

# Config block -> seeds, env-step budget, report marks, optional hold level.
SUITE = {
    'cartpole': dict(seeds=[5, 6, 7], steps=14000, marks=[4000, 8000, 14000],
                     hold=400),
    'pendulum': dict(seeds=[0, 1, 2], steps=10000,
                     marks=[2000, 4000, 6000, 8000, 10000]),
    'minatar': dict(seeds=[0], steps=40000,
                    marks=[10000, 20000, 30000, 40000]),
}


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


def report(root, names):
  lines = []
  for name in names:
    spec = SUITE[name]
    header = ['run', 'env steps'] + [f'@{m:,}' for m in spec['marks']]
    if spec.get('hold'):
      header.append(f'min after {spec["hold"]}')
    lines.append(f'## {name}')
    lines.append('| ' + ' | '.join(header) + ' |')
    lines.append('|' + ' --- |' * len(header))
    for seed in spec['seeds']:
      logdir = root / name / f'seed{seed}'
      run = scores.load_run(logdir) if (logdir / 'scores.jsonl').exists() \
          else None
      if run is None:
        lines.append(f'| seed {seed} | not run |')
        continue
      row = [f'seed {seed}', f'{int(run.steps):,}']
      row += [f'{last_mean_at(run.xs, run.ys, m):.1f}' for m in spec['marks']]
      if spec.get('hold'):
        low = held_min(run.xs, run.ys, spec['hold'])
        row.append('never reached' if low is None else f'{low:.1f}')
      lines.append('| ' + ' | '.join(row) + ' |')
    lines.append('')
  return '\n'.join(lines)


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--root', required=True)
  parser.add_argument('--only', nargs='+', choices=sorted(SUITE),
                      default=list(SUITE))
  parser.add_argument('--parallel', type=int, default=1)
  parser.add_argument('--report', action='store_true',
                      help='only print the report of runs made so far')
  args = parser.parse_args(argv)
  root = pathlib.Path(os.path.expanduser(args.root))
  failed = 0
  if not args.report:
    for name in args.only:
      spec = SUITE[name]
      failed |= study.main([
          '--root', str(root), '--methods', name,
          '--seeds', *map(str, spec['seeds']), '--parallel',
          str(args.parallel), '--', '--run.steps', str(spec['steps'])])
  print(report(root, args.only))
  return failed


if __name__ == '__main__':
  sys.exit(main())
