"""Config checks that run before anything is written to the logdir.

This module owns no key: it asks the modules that read the config. An
owner declares any of
  RANGES                ((key pattern, kind, low, high), ...): kind 'int' or
                        'number', bounds inclusive, None for open
  CHOICES               {key: accepted values}
  check(config)         -> an error message or None, for relations
                        between keys (it sees the whole config)
  check_spaces(config, obs_space) -> error or None, with the env's spaces
  check_devices(config, count, processes) -> error or None, with JAX's
                        devices (`count` local devices in each process)
  check_processes(config, settings) -> error or None, for a job of several
                        processes (hosts.Settings)
The owners are the config module (top-level keys, run.seeds, the logger), the
agent, its extensions, the replay samplers, the env factory and
every env suite, the run scripts and the JAX wrapper; see owners(). Every
numeric key must be a finite number within the first matching rule of any
owner; a key that no rule matches must be >= 0. Each failure raises
ConfigError with one line that names the key and the value.
"""

import importlib
import math
import re


from dreamerv3.config import ConfigError  # noqa: F401 (raised here)


def owners(config):
  """The modules that own config keys, in the order they are asked."""
  from dreamerv3 import agent, config as config_module, extensions
  from embodied import envs, jax as ejax, run
  from embodied.core import samplers
  from embodied.jax import hosts
  suites = [importlib.import_module(m) for m in envs.SUITES.values()]
  return [config_module, agent, *extensions.modules(config), samplers,
          envs, *suites, run, *run.modules(), ejax.agent, hosts]


def check_config(config):
  """Every check that needs the config alone."""
  mods = owners(config)
  check_numbers(config, mods)
  for module in mods:
    for key, choices in getattr(module, 'CHOICES', {}).items():
      if config[key] not in choices:
        raise ConfigError(
            f"Unknown {key} '{config[key]}': choose from "
            f"{', '.join(map(str, choices))}")
  _ask(mods, 'check', config)


def check_spaces(config, obs_space):
  """Checks that need the env's observation space."""
  _ask(owners(config), 'check_spaces', config, obs_space)


def check_devices(config, count, processes=1):
  """Checks that need JAX's devices."""
  _ask(owners(config), 'check_devices', config, count, processes)


def check_numbers(config, mods=None):
  rules = [rule for module in (mods or owners(config))
           for rule in getattr(module, 'RANGES', ())]
  for key, value in config.flat.items():
    if isinstance(value, bool) or not isinstance(value, (int, float)):
      continue
    kind, low, high = next(
        (rule[1:] for rule in rules if re.fullmatch(rule[0], key)),
        ('number', 0, None))
    where = f'{key} must be'
    if not math.isfinite(value):
      raise ConfigError(f'{where} a finite number, got {value}')
    if kind == 'int' and value != int(value):
      raise ConfigError(f'{where} an integer, got {value}')
    if (low is not None and value < low) or (high is not None and value > high):
      span = (f'between {low} and {high}' if high is not None else
              f'at least {low}')
      raise ConfigError(f'{where} {span}, got {value}')


def check_distributed(config, environ):
  """jax.distributed and the environment -> hosts.Settings, or None for one
  process; before the logdir, so every process agrees on where to write."""
  from embodied.jax import hosts
  try:
    settings = hosts.resolve(config.jax.distributed, environ)
  except hosts.SettingsError as e:
    raise ConfigError(str(e)) from None
  if settings is None:
    return None
  if not config.logdir:
    raise ConfigError(
        f'{settings.num_processes} processes (jax.distributed, from '
        f'{settings.source}) need an explicit --logdir: each would stamp '
        'its own otherwise')
  _ask(owners(config), 'check_processes', config, settings)
  return settings


def _ask(mods, name, *args):
  for module in mods:
    fn = getattr(module, name, None)
    error = fn(*args) if fn else None
    if error:
      raise ConfigError(error)
