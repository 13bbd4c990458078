"""Named experiments of DreamerV3-XP, each a study (scripts/study.py) over
seeds with its config blocks.

  python scripts/experiments.py run_standard_dreamer \\
      --name "DreamerV3 Baseline" \\
      --description "DreamerV3 standard configuration run" --num_seeds 2 \\
      --configs atari100k size12m --tasks atari100k_krull atari100k_boxing
  python scripts/experiments.py run_latent_disagreement_experiment_exp_decay \\
      --name "DreamerV3 Latent Reward Disagreement (exp. decay)" \\
      --description "..." --num_seeds 2 --configs bsuite --slurm

Entry points (the method blocks of configs.yaml they run):
  run_standard_dreamer                          uniform (plain DreamerV3)
  run_replay_buffer_experiment                  xp_replay
  run_latent_disagreement_experiment_exp_decay  disagreement_exp_decay
  run_latent_disagreement_experiment_ema        disagreement_slope_ema
--methods replaces the entry point's blocks (e.g. xp_disagreement_exp_decay
for both extensions at once). Runs seeds 0..num_seeds-1 into
ROOT/<method>/seed<k> (ROOT/<task>/<method>/seed<k> with several --tasks);
ROOT defaults to ~/logdir/experiments/<entry point>. --name and
--description go to ROOT/experiment.json; flags after `--` go to every run.
"""

import argparse
import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

import study  # noqa: E402

EXPERIMENTS = {
    'run_standard_dreamer': ['uniform'],
    'run_replay_buffer_experiment': ['xp_replay'],
    'run_latent_disagreement_experiment_exp_decay': ['disagreement_exp_decay'],
    'run_latent_disagreement_experiment_ema': ['disagreement_slope_ema'],
}


def study_args(argv):
  """argv of this script -> argv of scripts/study.py."""
  argv = list(argv)
  extra = []
  if '--' in argv:
    extra = argv[argv.index('--'):]
    argv = argv[:argv.index('--')]
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('experiment', choices=sorted(EXPERIMENTS))
  parser.add_argument('--name', default='')
  parser.add_argument('--description', default='')
  parser.add_argument('--num_seeds', type=int, default=1)
  parser.add_argument('--root', default='')
  parser.add_argument('--tasks', nargs='+', default=[])
  parser.add_argument('--configs', nargs='*', default=[])
  parser.add_argument('--methods', nargs='+', default=[],
                      help="config blocks instead of the experiment's")
  parser.add_argument('--parallel', type=int, default=1)
  parser.add_argument('--slurm', action='store_true')
  parser.add_argument('--dry', action='store_true')
  args = parser.parse_args(argv)
  if args.num_seeds < 1:
    parser.error(f'--num_seeds must be at least 1, got {args.num_seeds}')
  root = args.root or f'~/logdir/experiments/{args.experiment}'
  out = ['--root', root,
         '--methods', *(args.methods or EXPERIMENTS[args.experiment]),
         '--seeds', *map(str, range(args.num_seeds)),
         '--parallel', str(args.parallel),
         '--name', args.name or args.experiment,
         '--description', args.description]
  if args.tasks:
    out += ['--tasks', *args.tasks]
  if args.configs:
    out += ['--configs', *args.configs]
  if args.slurm:
    out.append('--slurm')
  if args.dry:
    out.append('--dry')
  return out + extra


def main(argv=None):
  return study.main(study_args(sys.argv[1:] if argv is None else argv))


if __name__ == '__main__':
  sys.exit(main())
