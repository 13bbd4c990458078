"""Devices and hosts: which local devices train and which act, and JAX's
multi-process runtime started from config or from SLURM's environment.

Invariants
- `split_devices` is a pure function of the local device list: every process
  of a job must see the same number of local devices, so all processes pick
  the same positions and the global train mesh is rectangular.
- `resolve` is a pure function of the config sub-tree and an environment
  mapping; it returns None for a single-process run and never touches JAX,
  so it can run before the logdir is chosen.
- `initialize` must run before anything asks JAX for its devices.
"""

import dataclasses
import re

import numpy as np

MODES = ('off', 'auto', 'slurm', 'manual')
# Config checks (dreamerv3/validate.py) of jax.distributed.*.
RANGES = ((r'jax\.distributed\.num_processes', 'int', 1, None),
          (r'jax\.distributed\.process_id', 'int', 0, None),
          (r'jax\.distributed\.port', 'int', 0, 65535))
CHOICES = {'jax.distributed.mode': MODES}


class SettingsError(ValueError):
  """A distributed setting that cannot work; the message names the key."""


def split_devices(local, train=0, policy=0):
  """Local devices -> (train devices, policy devices).

  train: how many train; 0 = all that the policy does not take.
  policy: how many act; 0 = the policy runs on the train devices. Otherwise
  it takes the `policy` devices right after the train devices, so
  train + policy must not exceed the local count."""
  local = list(local)
  if policy == 0:
    count = train or len(local)
    if count > len(local):
      raise SettingsError(
          f'jax.train_devices is {train} but there are {len(local)} local '
          'device(s)')
    return local[:count], local[:count]
  count = train or len(local) - policy
  if count < 1 or count + policy > len(local):
    raise SettingsError(
        f'jax.train_devices {train} (0 = the rest) and jax.policy_devices '
        f'{policy} need {max(count, 1) + policy} device(s) but there are '
        f'{len(local)} local device(s)')
  return local[:count], local[count:count + policy]


def expand_nodelist(text):
  """SLURM's compact host list -> host names, in order.
  'node[01-03,07],gpu5' -> ['node01', 'node02', 'node03', 'node07', 'gpu5'];
  several brackets in one name expand as a product ('r[1-2]n[1-2]').
  Zero padding follows the range's lower bound, as SLURM writes it."""
  hosts, depth, start = [], 0, 0
  for i, char in enumerate(text + ','):
    depth += (char == '[') - (char == ']')
    if char == ',' and depth == 0:
      if text[start:i]:
        hosts += _expand_name(text[start:i])
      start = i + 1
  return hosts


def _expand_name(name):
  match = re.fullmatch(r'([^\[]*)\[([^\]]*)\](.*)', name)
  if not match:
    return [name]
  prefix, ranges, rest = match.groups()
  heads = []
  for item in ranges.split(','):
    if '-' in item:
      low, high = item.split('-')
      heads += [f'{prefix}{i:0{len(low)}d}'
                for i in range(int(low), int(high) + 1)]
    else:
      heads.append(prefix + item)
  return [head + tail for head in heads for tail in _expand_name(rest)]


@dataclasses.dataclass(frozen=True)
class Settings:
  coordinator: str   # host:port of process 0
  num_processes: int
  process_id: int
  source: str        # 'config' or 'slurm'


def resolve(config, environ):
  """The jax.distributed sub-config and an environment -> Settings, or None
  for a single process.

  mode off: one process. manual: coordinator, num_processes and process_id
  from the config. slurm: from SLURM_PROCID, SLURM_STEP_NUM_TASKS (else
  SLURM_NTASKS) and the first host of SLURM_STEP_NODELIST (else
  SLURM_JOB_NODELIST) with `port`. auto: slurm when srun started this
  process as one of several tasks (SLURM_STEP_NUM_TASKS > 1; the batch
  shell itself has no step variables), else off."""
  mode = config.mode
  if mode not in MODES:
    raise SettingsError(
        f"jax.distributed.mode must be one of {', '.join(MODES)}, got "
        f"'{mode}'")
  if mode == 'off':
    return None
  if mode == 'manual':
    count, index = int(config.num_processes), int(config.process_id)
    if count < 1 or not 0 <= index < count:
      raise SettingsError(
          f'jax.distributed.process_id ({index}) must be in [0, '
          f'jax.distributed.num_processes ({count}))')
    if count == 1:
      return None
    if not re.fullmatch(r'[^:\s]+:\d+', config.coordinator):
      raise SettingsError(
          "jax.distributed.coordinator must be host:port with mode manual, "
          f"got '{config.coordinator}'")
    return Settings(config.coordinator, count, index, 'config')
  tasks = environ.get('SLURM_STEP_NUM_TASKS')
  if mode == 'auto' and not (tasks and int(tasks) > 1):
    return None
  tasks = tasks or environ.get('SLURM_NTASKS')
  nodes = environ.get('SLURM_STEP_NODELIST') or environ.get(
      'SLURM_JOB_NODELIST')
  missing = [k for k, v in (
      ('SLURM_PROCID', environ.get('SLURM_PROCID')),
      ('SLURM_NTASKS', tasks), ('SLURM_JOB_NODELIST', nodes)) if not v]
  if missing:
    raise SettingsError(
        'jax.distributed.mode slurm needs the SLURM environment of an srun '
        f"task, but {', '.join(missing)} is not set")
  count, index = int(tasks), int(environ['SLURM_PROCID'])
  if count == 1:
    return None
  return Settings(f'{expand_nodelist(nodes)[0]}:{slurm_port(config, environ)}',
                  count, index, 'slurm')


def slurm_port(config, environ):
  """jax.distributed.port, or with 0 a port derived from the job id so two
  jobs that share a first node do not collide."""
  if config.port:
    return int(config.port)
  return 20000 + int(environ.get('SLURM_JOB_ID', '0') or 0) % 20000


def initialize(settings, timeout=300):
  """Start JAX's multi-process runtime (before any device use). On CPU the
  processes reduce through gloo (JAX's default since 0.5.1; set where the
  option still exists)."""
  import jax
  option = 'jax_cpu_collectives_implementation'
  if option in getattr(jax.config, 'values', {}):
    jax.config.update(option, 'gloo')
  jax.distributed.initialize(
      settings.coordinator, settings.num_processes, settings.process_id,
      cluster_detection_method='deactivate', initialization_timeout=timeout)


# Collectives between the processes of a job on host values. JAX keeps them
# in jax.experimental (outside its API compatibility policy): this is the
# one place that imports them.


def allgather(value):
  """[...] NumPy value of this process -> [processes, ...] of all."""
  from jax.experimental import multihost_utils
  return np.asarray(multihost_utils.process_allgather(value))


def broadcast(tree):
  """Process 0's tree of NumPy values, on every process."""
  import jax
  from jax.experimental import multihost_utils
  return jax.tree.map(np.asarray, multihost_utils.broadcast_one_to_all(tree))
