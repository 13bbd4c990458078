"""Devices and hosts without starting JAX's runtime: the SLURM host list
parser, distributed settings from config or SLURM's environment, the split
of local devices into train and policy devices, and the config checks."""

import elements
import pytest

from dreamerv3 import main, validate
from embodied.jax import hosts

ARGS = ['--configs', 'debug', '--task', 'dummy_vector']


@pytest.mark.parametrize('text, expected', [
    ('node01', ['node01']),
    ('node[01-03,07],gpu5', ['node01', 'node02', 'node03', 'node07', 'gpu5']),
    ('a[8-11]', ['a8', 'a9', 'a10', 'a11']),
    ('n[098-101]', ['n098', 'n099', 'n100', 'n101']),
    ('x,r[1-2]n[08-09]-ib', ['x', 'r1n08-ib', 'r1n09-ib', 'r2n08-ib',
                             'r2n09-ib']),
    ('', []),
])
def test_expand_nodelist(text, expected):
  assert hosts.expand_nodelist(text) == expected


def dist(**kw):
  base = dict(mode='auto', coordinator='', num_processes=1, process_id=0,
              port=0)
  return elements.Config({**base, **kw})


SRUN = {'SLURM_JOB_ID': '4321', 'SLURM_PROCID': '1', 'SLURM_NTASKS': '2',
        'SLURM_STEP_NUM_TASKS': '2', 'SLURM_JOB_NODELIST': 'gpu[07-08]',
        'SLURM_STEP_NODELIST': 'gpu[07-08]'}


def test_resolve_from_slurm():
  settings = hosts.resolve(dist(), SRUN)
  assert settings == hosts.Settings('gpu07:24321', 2, 1, 'slurm')
  assert hosts.resolve(dist(port=1234), SRUN).coordinator == 'gpu07:1234'
  # The batch shell of an sbatch job has no step variables: one process.
  shell = {k: v for k, v in SRUN.items() if 'STEP' not in k}
  assert hosts.resolve(dist(), shell) is None
  assert hosts.resolve(dist(mode='slurm'), shell).num_processes == 2
  assert hosts.resolve(dist(), {**SRUN, 'SLURM_STEP_NUM_TASKS': '1'}) is None
  assert hosts.resolve(dist(), {}) is None
  assert hosts.resolve(dist(mode='off'), SRUN) is None
  with pytest.raises(hosts.SettingsError, match='SLURM_PROCID'):
    hosts.resolve(dist(mode='slurm'), {})


def test_resolve_manual():
  settings = hosts.resolve(dist(
      mode='manual', coordinator='10.0.0.1:5000', num_processes=4,
      process_id=3), {})
  assert settings == hosts.Settings('10.0.0.1:5000', 4, 3, 'config')
  assert hosts.resolve(dist(mode='manual'), SRUN) is None  # One process.
  with pytest.raises(hosts.SettingsError, match='coordinator'):
    hosts.resolve(dist(mode='manual', num_processes=2), {})
  with pytest.raises(hosts.SettingsError, match='process_id'):
    hosts.resolve(dist(mode='manual', coordinator='h:1', num_processes=2,
                       process_id=2), {})
  with pytest.raises(hosts.SettingsError, match='jax.distributed.mode'):
    hosts.resolve(dist(mode='mpi'), {})


def test_split_devices():
  local = list('abcd')
  assert hosts.split_devices(local) == (local, local)
  assert hosts.split_devices(local, 2) == (['a', 'b'], ['a', 'b'])
  assert hosts.split_devices(local, 0, 1) == (['a', 'b', 'c'], ['d'])
  assert hosts.split_devices(local, 2, 2) == (['a', 'b'], ['c', 'd'])
  assert hosts.split_devices(local, 1, 1) == (['a'], ['b'])
  for train, policy in ((5, 0), (3, 2), (0, 4)):
    with pytest.raises(hosts.SettingsError, match='jax.train_devices'):
      hosts.split_devices(local, train, policy)


@pytest.mark.parametrize('args, count, processes, culprit', [
    (['--jax.train_devices', '3'], 2, 1, 'jax.train_devices is 3'),
    (['--jax.policy_devices', '2'], 2, 1, 'jax.policy_devices is 2'),
    (['--jax.policy_devices', '1', '--jax.train_devices', '2'], 2, 1,
     'jax.policy_devices'),
    (['--jax.policy_devices', '1', '--batch_size', '4'], 4, 1,
     'divisible by the 3 train devices'),
    (['--batch_size', '6'], 2, 2, 'x 2 processes'),
    (['--jax.policy_devices', '2', '--run.envs', '3'], 4, 1, 'run.envs'),
    (['--jax.policy_devices', '-1'], 4, 1, 'jax.policy_devices'),
])
def test_check_devices_names_the_key(args, count, processes, culprit):
  config = main.parse(ARGS + args)
  with pytest.raises(main.ConfigError, match=culprit):
    validate.check_numbers(config)
    validate.check_devices(config, count, processes)


def test_check_devices_accepts():
  config = main.parse(ARGS + ['--jax.policy_devices', '1', '--run.envs', '2',
                              '--batch_size', '6'])
  validate.check_devices(config, 4)
  validate.check_devices(config, 2)
  config = main.parse(ARGS + ['--batch_size', '8'])
  validate.check_devices(config, 2, 2)


def test_check_distributed(monkeypatch):
  config = main.parse(ARGS)
  assert validate.check_distributed(config, {}) is None
  with_logdir = main.parse(ARGS + ['--logdir', '/tmp/x'])
  assert validate.check_distributed(with_logdir, SRUN).process_id == 1
  with pytest.raises(main.ConfigError, match='--logdir'):
    validate.check_distributed(config.update(
        jax={'distributed': {'mode': 'slurm'}}), SRUN)
  with pytest.raises(main.ConfigError, match='batch_size'):
    validate.check_distributed(with_logdir.update(batch_size=3), SRUN)
  with pytest.raises(main.ConfigError, match='jax.distributed.coordinator'):
    validate.check_distributed(with_logdir.update(jax={'distributed': {
        'mode': 'manual', 'num_processes': 2}}), {})


def test_multihost_refuses_device_replay():
  """Two processes with replay.device accelerator crashed in the first
  batch transfer (a device array of one process is no local row of the
  mesh); refused before anything runs."""
  config = main.parse(ARGS + ['--logdir', '/tmp/x', '--replay.device',
                              'accelerator'])
  with pytest.raises(main.ConfigError) as e:
    validate.check_distributed(config, SRUN)
  assert str(e.value).startswith('replay.device accelerator works in one '
                                 'process; jax.distributed found 2 processes')
  assert validate.check_distributed(config, {}) is None
