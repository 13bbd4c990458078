"""Run loops selected by --script.

Each script is a module of this package that defines a function of its own
name, (make_agent, make_replay, make_env, make_logger, args) -> None (the
agent is an embodied.core.base.Agent: the interface the loops use), and
the config checks of the run.* keys it reads (RANGES, check(config), ...;
see dreamerv3/validate.py) and, if one command may run only part of a job,
lock_parts(args). Adding a script: its module, its name in
SCRIPTS, its run.* keys in configs.yaml.
"""

import importlib

SCRIPTS = ('train', 'train_eval', 'eval_only', 'parallel')
CHOICES = {'script': SCRIPTS}


def modules():
  return [importlib.import_module(f'{__name__}.{name}') for name in SCRIPTS]


def get(name):
  """The run loop of script `name`."""
  return getattr(importlib.import_module(f'{__name__}.{name}'), name)


def lock_parts(name, args):
  """The parts of a job that one command of script `name` runs, for the
  logdir lock (embodied.core.logdir_lock); None: the whole run."""
  module = importlib.import_module(f'{__name__}.{name}')
  parts = getattr(module, 'lock_parts', None)
  return parts(args) if parts else None


from .eval_only import eval_only  # noqa: E402
from .parallel import parallel  # noqa: E402
from .train import train  # noqa: E402
from .train_eval import train_eval  # noqa: E402
