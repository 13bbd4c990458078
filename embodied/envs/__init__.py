"""Environment suites behind one factory: make('<suite>_<name>', ...)."""

import importlib

import numpy as np

from ..core import wrappers


class UnknownTaskError(ValueError):
  """The task string names no known suite or no task within its suite."""


class OptionError(ValueError):
  """A suite option (config.env.<suite>.<key>) has a value the suite rejects."""


class MissingPackageError(ImportError):
  """An optional package (or system library) that a suite needs is missing;
  the message says what to install."""


# Suite name -> module defining make(name, *, seed, size, **kwargs) -> Env.
# Modules import lazily so that a suite's dependencies load only when used.
SUITES = {
    'dummy': 'embodied.envs.dummy',
    'gym': 'embodied.envs.gym',
    'atari': 'embodied.envs.atari',
    'atari100k': 'embodied.envs.atari100k',
    'minatar': 'embodied.envs.minatar',
    'crafter': 'embodied.envs.crafter',
    'dmc': 'embodied.envs.dmc',
    'bsuite': 'embodied.envs.bsuite',
    'pinpad': 'embodied.envs.pinpad',
    'memmaze': 'embodied.envs.memmaze',
    'loconav': 'embodied.envs.loconav',
}

# Suites of the reference DreamerV3 code whose packages have no installable
# wheel for this Python (3.11, Linux x86_64): their tasks name what is missing.
UNAVAILABLE = {
    'procgen': 'procgen (no wheel nor source release for Python 3.11)',
    'dmlab': 'deepmind-lab (not on PyPI; it builds from source with Bazel)',
    'minecraft': 'minerl (a source release only, whose build needs a Java 8 '
                 'JDK and downloads Minecraft)',
}


# Config checks (dreamerv3/validate.py) of the factory's keys; each suite
# module declares those of its env.<suite>.* options.
RANGES = ((r'env\.length', 'int', 0, None),)


def check(config):
  size = config.env.size
  if len(size) != 2 or min(size) < 1:
    return f'env.size needs two positive values (height, width), got {size}'
  return None


def suites():
  return sorted(SUITES)


def make(task, *, seed=0, length=0, size=(64, 64), **kwargs):
  """Builds the env for `task` with the standard wrappers applied."""
  suite, sep, name = task.partition('_')
  if not sep or not name:
    raise UnknownTaskError(
        f"Unknown task '{task}': expected '<suite>_<name>' with suite one of "
        f"{', '.join(suites())}")
  if suite in UNAVAILABLE:
    raise MissingPackageError(
        f"Task '{task}' needs {UNAVAILABLE[suite]}: it cannot be installed "
        'here.')
  if suite not in SUITES:
    raise UnknownTaskError(
        f"Unknown task '{task}': suite '{suite}' is not one of "
        f"{', '.join(suites())}")
  module = importlib.import_module(SUITES[suite])
  env = module.make(name, seed=seed, size=size, **kwargs)
  return wrap(env, length=length, size=size)


def wrap(env, length=0, size=None):
  """Standard wrappers: [-1, 1] continuous actions (clipped there: the
  agent samples them unclipped), time limit, image size."""
  for key, space in env.act_space.items():
    if key == 'reset' or not np.issubdtype(space.dtype, np.floating):
      continue
    bounded = np.isfinite(space.low) & np.isfinite(space.high)
    unit = (space.low == -1) & (space.high == 1)
    if bounded.any() and not unit[bounded].all():
      env = wrappers.NormalizeAction(env, key)
    if bounded.any():
      env = wrappers.ClipAction(env, key)
  if length:
    env = wrappers.TimeLimit(env, length)
  if size:
    keys = [
        k for k, v in env.obs_space.items()
        if v.dtype == np.uint8 and len(v.shape) == 3
        and v.shape[:2] != tuple(size)]
    if keys:
      env = wrappers.ResizeImage(env, size, keys)
  return env
