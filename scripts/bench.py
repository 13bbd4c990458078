"""Benchmarks: python scripts/bench.py SUBCOMMAND [--bench.KEY VALUE ...]
[config flags]

  train     env, policy and train throughput, compile times, GFLOP/s, memory
  ab        a config variant's cost on the train loop, A/B in one process
  devices   data parallel over 1, 2, 4 mock CPU devices: speed and agreement
  report    the report pass (losses, open-loop videos) next to a train step
  replay    prioritized sampler throughput and a priority refresh's cost
  mask      the masked pixel loss's mask alone, at the config's batch shape
  parallel  `--script train` vs `--script parallel`: short runs, their logs
  env       raw env throughput: one env alone, then N through the Driver
  members   --run.seeds N against one seed: compile and step time per seed

Benchmark options are --bench.KEY VALUE, typed by their defaults; every
subcommand lists its own with --help. All other arguments are config flags
as dreamerv3/main.py takes them (--configs, --task, --run.envs, ...). Each
subcommand prints a table and ends with one line `JSON {...}`;
--bench.json PATH also writes that object to PATH. Figures only: nothing
is asserted about time.

  python scripts/bench.py train --configs size1m --task dummy_image
  python scripts/bench.py train --configs size12m --task dummy_image \\
      --bench.updates 5
  python scripts/bench.py ab --configs size1m --task dummy_image \\
      --bench.variant "--intrinsic.enabled True"
  python scripts/bench.py env --configs atari100k --bench.envs 8
  python scripts/bench.py members --configs size1m --task dummy_image
  python scripts/bench.py mask --help
"""

import importlib
import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from scripts.benchmarks import common  # noqa: E402

SUBCOMMANDS = ('train', 'ab', 'devices', 'report', 'replay', 'mask',
               'parallel', 'env', 'members')


def load(name):
  """The subcommand's module, imported only when asked for."""
  return importlib.import_module(f'scripts.benchmarks.{name}')


def options(module):
  return {**module.OPTIONS, **common.COMMON}


def split_args(name, argv):
  """(options, config flags) of a subcommand's arguments."""
  return common.split_args(argv, options(load(name)))


def main(argv=None):
  argv = sys.argv[1:] if argv is None else list(argv)
  if not argv or argv[0] in ('-h', '--help'):
    print(__doc__.strip())
    return None
  name, rest = argv[0], argv[1:]
  if name not in SUBCOMMANDS:
    raise SystemExit(f"Unknown subcommand '{name}'; choose from "
                     f"{', '.join(SUBCOMMANDS)} (--help says more)")
  module = load(name)
  if '-h' in rest or '--help' in rest:
    print(common.usage(name, module.__doc__, options(module)))
    return None
  values, flags = split_args(name, rest)
  from dreamerv3.validate import ConfigError
  try:
    results = module.run(values, flags)
  except ConfigError as e:
    print(f'Error: {e}', file=sys.stderr)  # One line, as main.py gives it.
    raise SystemExit(2) from None
  common.finish(results, values['json'])
  return results


if __name__ == '__main__':
  main()
