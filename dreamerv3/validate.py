"""Config checks that run before anything is written to the logdir.

Every numeric key must be a finite number; its range comes from the first
rule in RANGES whose pattern matches it (keys that no rule matches must be
>= 0). Cross-key checks follow, then the checks that need the env's spaces
or JAX's devices. Each failure raises ConfigError with one line that names
the key and the value.
"""

import math
import re


class ConfigError(Exception):
  pass


INT = 'an integer'
# (pattern, kind, low, high): kind is INT or None (any number); bounds are
# inclusive, None for open.
RANGES = (
    (r'seed', INT, 0, 2 ** 31 - 1),
    (r'batch_size|batch_length|run\.(envs|eval_envs|eval_eps)', INT, 1, None),
    (r'replay_context|jax\.(train|policy)_devices|run\.train_fill|'
     r'env\.length', INT, 0, None),
    (r'jax\.distributed\.num_processes', INT, 1, None),
    (r'jax\.distributed\.process_id', INT, 0, None),
    (r'jax\.distributed\.port', INT, 0, 65535),
    (r'run\.steps', None, 1, None),
    (r'run\.env_max_restarts', INT, 0, None),
    (r'run\.(report_batch|report_length)', INT, 1, None),
    (r'run\.(report_every|video_every)', None, 0, None),
    (r'run\.train_ratio', None, 1e-9, None),
    (r'env\.dmc\.camera', INT, -1, None),
    (r'env\.\w+\.(repeat|episode_length)', INT, 1, None),
    (r'env\.\w+\.(noops|max_frames)', INT, 0, None),
    (r'env\.\w+\.sticky', None, 0, 1),
    (r'replay\.(size|chunksize)', INT, 1, None),
    (r'replay\.cache_every|dynamics\.k_steps', INT, 0, None),
    (r'replay\.prio\.maxfrac', None, 0, 1),
    (r'logger\.fps', None, 1e-9, None),
    (r'agent\.imag_length', INT, 1, None),
    (r'agent\.imag_last|agent\.opt\.warmup', INT, 0, None),
    (r'agent\.horizon', None, 1, None),
    (r'agent\.(lam|slow_rate)|agent\.retnorm\.(rate|perclo|perchi)', None,
     0, 1),
    (r'agent\.opt\.beta[12]', None, 0, 0.999999),
    (r'agent\.\w+\.(units|depth|kernel)', INT, 1, None),
    (r'agent\.dyn\.(deter|hidden|stoch|classes|blocks)', INT, 1, None),
    (r'agent\.\w+\.(layers|imglayers|obslayers|dynlayers)', INT, 0, None),
    (r'agent\.\w+\.bins', INT, 2, None),
    (r'agent\.\w+\.unimix', None, 0, 1),
    (r'agent\.policy\.(minstd|maxstd)', None, 1e-6, None),
    (r'agent\.intrinsic\.ensemble_size', INT, 2, None),
    (r'agent\.intrinsic\.window', INT, 2, None),
    (r'agent\.intrinsic\.lambda_(start|end|min|max)', None, 0, 1),
    (r'agent\.intrinsic\.(ema_alpha|scale_rate|ema_rate_min|ema_rate_max)',
     None, 1e-9, 1),
    (r'agent\.intrinsic\.(decay_steps|temperature)', None, 1e-9, None),
    (r'run\.env_workers', INT, 1, None),
    (r'run\.(sync_every|ratio_tolerance|actor_wait)', None, 0, None),
)


def check_numbers(config):
  for key, value in config.flat.items():
    if isinstance(value, bool) or not isinstance(value, (int, float)):
      continue
    kind, low, high = next(
        (rule[1:] for rule in RANGES if re.fullmatch(rule[0], key)),
        (None, 0, None))
    where = f'{key} must be'
    if not math.isfinite(value):
      raise ConfigError(f'{where} a finite number, got {value}')
    if kind == INT and value != int(value):
      raise ConfigError(f'{where} {INT}, got {value}')
    if (low is not None and value < low) or (high is not None and value > high):
      span = (f'between {low} and {high}' if high is not None else
              f'at least {low}')
      raise ConfigError(f'{where} {span}, got {value}')


def check_relations(config):
  """Checks between keys, from the config alone."""
  streams = config.run.envs
  slots = max(2, -(-int(config.replay.size) // config.replay.chunksize))
  if slots <= streams:
    raise ConfigError(
        f'replay.size ({int(config.replay.size)}) must hold more than '
        f'run.envs + 1 = {streams + 1} chunks of replay.chunksize '
        f'({config.replay.chunksize}): each env writes into its own chunk '
        f'and one more is needed to evict the oldest.')
  dyn = config.agent.dyn
  if dyn.deter % dyn.blocks:
    raise ConfigError(
        f'agent.dyn.deter ({dyn.deter}) must be divisible by agent.dyn.blocks '
        f'({dyn.blocks})')
  policy = config.agent.policy
  if policy.maxstd < policy.minstd:
    raise ConfigError(
        f'agent.policy.maxstd ({policy.maxstd}) must be at least '
        f'agent.policy.minstd ({policy.minstd})')
  retnorm = config.agent.retnorm
  if retnorm.perclo >= retnorm.perchi:
    raise ConfigError(
        f'agent.retnorm.perclo ({retnorm.perclo}) must be below '
        f'agent.retnorm.perchi ({retnorm.perchi})')


def check_spaces(config, obs_space):
  """Checks that need the env's observation space."""
  from dreamerv3 import rssm
  images = rssm.image_keys(obs_space)
  if config.dynamics.masked_loss and not images:
    raise ConfigError(
        'dynamics.masked_loss True needs image observations, but the task '
        f"{config.task} has none (observations: "
        f"{', '.join(k for k in obs_space if not k.startswith('log/'))})")
  for key in images:
    height, width = obs_space[key].shape[:2]
    for net in ('enc', 'dec'):
      stages = len(config.agent[net].mults)
      if height % 2 ** stages or width % 2 ** stages:
        raise ConfigError(
            f"The image '{key}' is {height}x{width} but agent.{net}.mults "
            f'has {stages} stages, which halve it {stages} times: choose '
            f'env.size divisible by {2 ** stages} or fewer stages.')


def check_devices(config, count, processes=1):
  """Checks that need JAX's devices: `count` local devices in each of
  `processes` processes (see embodied/jax/hosts.split_devices)."""
  train, policy = config.jax.train_devices, config.jax.policy_devices
  where = f' in each of {processes} processes' if processes > 1 else ''
  if train > count:
    raise ConfigError(
        f'jax.train_devices is {train} but JAX sees {count} device(s){where}')
  if policy and (train or 1) + policy > count:
    raise ConfigError(
        f'jax.policy_devices is {policy} but JAX sees {count} device(s)'
        f'{where}, of which jax.train_devices takes {train or "the rest"} '
        '(the policy needs devices after the train devices)')
  devices = (train or count - policy) * processes
  if config.batch_size % devices:
    raise ConfigError(
        f'batch_size ({config.batch_size}) must be divisible by the '
        f'{devices} train devices (jax.train_devices {train}, 0 = all'
        + (f', x {processes} processes' if processes > 1 else '') + ')')
  if policy:
    keys = ['envs'] + (['eval_envs'] if config.script in (
        'train_eval', 'eval_only') else [])
    for key in keys:
      if config.run[key] % policy:
        raise ConfigError(
            f'run.{key} ({config.run[key]}) must be divisible by '
            f'jax.policy_devices ({policy}): the envs are split over them')


def check_distributed(config, environ):
  """jax.distributed and the environment -> hosts.Settings, or None for one
  process; before the logdir, so every process agrees on where to write."""
  from embodied.jax import hosts
  try:
    settings = hosts.resolve(config.jax.distributed, environ)
  except hosts.SettingsError as e:
    raise ConfigError(str(e)) from None
  if settings and not config.logdir:
    raise ConfigError(
        f'{settings.num_processes} processes (jax.distributed, from '
        f'{settings.source}) need an explicit --logdir: each would stamp '
        'its own otherwise')
  if settings and config.script == 'parallel':
    raise ConfigError(
        f'script parallel runs one learner; jax.distributed found '
        f'{settings.num_processes} processes ({settings.source}): use '
        'jax.distributed.mode off and one task')
  if settings and config.batch_size % settings.num_processes:
    raise ConfigError(
        f'batch_size ({config.batch_size}) must be divisible by the '
        f'{settings.num_processes} processes (jax.distributed): each '
        'samples its share')
  return settings
