"""scripts/slurm/ on a real SLURM: slurmctld, slurmd and munged on localhost
started by scripts/slurm_local.sh (needs root and Debian's slurm-wlm and
munge). Marked slurm: runs only with `pytest --slurm`.

Submits a short debug run, an array of two (TASKS x SEEDS), a run that is
sent USR1 (as `--signal=B:USR1@120` does before the time limit), requeues
itself and resumes from its checkpoint, then is cancelled (TERM: saves,
no requeue), and a multinode job's srun tasks (one node, two tasks)."""

import os
import pathlib
import re
import shutil
import subprocess
import sys
import tempfile
import time

import pytest

pytestmark = pytest.mark.slurm

ROOT = pathlib.Path(__file__).resolve().parent.parent
SLURM = ROOT / 'scripts' / 'slurm'
BASE = ['--configs', 'debug', '--task', 'dummy_vector']


@pytest.fixture(scope='module')
def cluster(tmp_path_factory):
  if os.geteuid() != 0 or not shutil.which('slurmctld'):
    pytest.skip('needs root and: apt-get install -y slurm-wlm munge')
  tmp = tmp_path_factory.mktemp('slurm')
  # Not under pytest's tmp (mode 700): munged runs as the munge user.
  daemons = pathlib.Path(tempfile.mkdtemp(prefix='dreamer-slurm-'))
  env = dict(os.environ, SLURM_LOCAL_DIR=str(daemons))
  # Niced daemons: their jobs inherit it.
  start = subprocess.run(
      ['nice', '-n', '10', str(ROOT / 'scripts' / 'slurm_local.sh'), 'start'],
      env=env, capture_output=True, text=True, timeout=120)
  assert start.returncode == 0, start.stdout + start.stderr
  env['SLURM_CONF'] = str(daemons / 'slurm.conf')
  env['PYTHON'] = sys.executable
  env['PYTHONUNBUFFERED'] = '1'
  try:
    yield dict(env=env, tmp=tmp, cache=str(tmp / 'jax_cache'))
  finally:
    subprocess.run([str(ROOT / 'scripts' / 'slurm_local.sh'), 'stop'],
                   env=env, timeout=120)


def sbatch(cluster, *args, env=None):
  proc = subprocess.run(
      ['sbatch', '--parsable', *args], cwd=ROOT, capture_output=True,
      text=True, env=dict(cluster['env'], **(env or {})), timeout=60)
  assert proc.returncode == 0, proc.stderr
  return proc.stdout.strip().split(';')[0]


def job(cluster, jobid):
  """scontrol's fields of one job (or array element 'ID_INDEX')."""
  out = subprocess.run(
      ['scontrol', 'show', 'job', '-o', jobid], capture_output=True,
      text=True, env=cluster['env'], timeout=30).stdout
  return dict(re.findall(r'(\w+)=(\S*)', out.splitlines()[0])) if out else {}


ENDED = ('COMPLETED', 'FAILED', 'CANCELLED', 'TIMEOUT', 'NODE_FAIL',
         'OUT_OF_MEMORY')


def wait_state(cluster, jobid, states, timeout):
  deadline = time.time() + timeout
  while time.time() < deadline:
    info = job(cluster, jobid)
    if info.get('JobState') in states:
      return info
    time.sleep(1)
  raise AssertionError(f'job {jobid} not in {states} after {timeout} s: '
                       f'{job(cluster, jobid)}')


def ckpt_step(logdir):
  latest = pathlib.Path(logdir) / 'ckpt' / 'latest'
  if not latest.exists():
    return None
  return int(latest.read_text().strip().rsplit('-', 1)[1])


def read(path):
  return pathlib.Path(path).read_text() if pathlib.Path(path).exists() else ''


def test_test_only(cluster):
  for args in (['run.sbatch'], ['--array=0-1', 'array.sbatch'],
               ['--nodes=1', '--ntasks-per-node=2', 'multinode.sbatch']):
    *options, script = args
    proc = subprocess.run(
        ['sbatch', '--test-only', *options, str(SLURM / script),
         '--logdir', '/tmp/x'], cwd=ROOT, capture_output=True, text=True,
        env=cluster['env'], timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert 'to start at' in proc.stderr, proc.stderr


def test_single_run(cluster):
  logdir = cluster['tmp'] / 'single'
  out = cluster['tmp'] / 'single.out'
  jobid = sbatch(cluster, f'--output={out}', str(SLURM / 'run.sbatch'),
                 *BASE, '--jax.cache_dir', cluster['cache'], '--logdir',
                 str(logdir), '--run.steps', '60')
  info = wait_state(cluster, jobid, ENDED, 240)
  assert info['JobState'] == 'COMPLETED', read(out)[-3000:]
  assert info['ExitCode'] == '0:0'
  assert ckpt_step(logdir) == 60
  assert 'Start training at step 0 ' in read(out)


def test_array_of_two(cluster):
  root = cluster['tmp'] / 'array'
  out = cluster['tmp'] / 'array-%A_%a.out'
  jobid = sbatch(
      cluster, '--array=0-1', f'--output={out}',
      str(SLURM / 'array.sbatch'), '--configs', 'debug', '--jax.cache_dir',
      cluster['cache'], '--run.steps', '40',
      env=dict(TASKS='dummy_vector', SEEDS='3 4', LOGROOT=str(root)))
  for index, seed in enumerate((3, 4)):
    info = wait_state(cluster, f'{jobid}_{index}',
                      ENDED, 300)
    text = read(cluster['tmp'] / f'array-{jobid}_{index}.out')
    assert info['JobState'] == 'COMPLETED', text[-3000:]
    logdir = root / 'dummy_vector' / f'seed{seed}'
    assert ckpt_step(logdir) == 40 and (logdir / 'done').exists()
    assert f'seed: {seed}' in read(logdir / 'config.yaml')


def test_requeue_resumes(cluster):
  logdir = cluster['tmp'] / 'requeue'
  out = cluster['tmp'] / 'requeue.out'
  jobid = sbatch(cluster, f'--output={out}', str(SLURM / 'run.sbatch'),
                 *BASE, '--jax.cache_dir', cluster['cache'], '--logdir',
                 str(logdir), '--run.steps', '1e6', '--run.log_every', '1')
  deadline = time.time() + 240
  while not re.search(r'^\{"step": [1-9]', read(logdir / 'metrics.jsonl'),
                      re.M):
    assert job(cluster, jobid)['JobState'] in ('PENDING', 'RUNNING'), \
        read(out)[-3000:]
    assert time.time() < deadline, read(out)[-3000:]
    time.sleep(1)
  # What sbatch --signal=B:USR1@120 sends before the time limit.
  subprocess.run(['scancel', '--signal=USR1', '--batch', jobid],
                 env=cluster['env'], check=True, timeout=30)
  deadline = time.time() + 300
  while not re.search(r'Start training at step [1-9]', read(out)):
    assert time.time() < deadline, read(out)[-3000:]
    time.sleep(1)
  text = read(out)
  stopped = int(re.search(
      r'Stopping on SIGUSR1 at step ([\d,]+)', text).group(1).replace(',', ''))
  resumed = int(re.search(
      r'Start training at step ([1-9][\d,]*)', text).group(1).replace(',', ''))
  assert stopped > 0 and resumed == stopped
  assert 'requeueing job' in text
  assert job(cluster, jobid)['Restarts'] == '1'
  # scancel sends TERM: the run saves and the job is not requeued. Sent
  # once the resumed run logs a step, i.e. trains, well within KillWait.
  while max(map(int, re.findall(r'^\{"step": (\d+)', read(
      logdir / 'metrics.jsonl'), re.M)), default=0) <= stopped:
    assert time.time() < deadline, read(out)[-3000:]
    time.sleep(1)
  subprocess.run(['scancel', jobid], env=cluster['env'], check=True,
                 timeout=30)
  info = wait_state(cluster, jobid, ENDED, 60)
  assert info['JobState'] == 'CANCELLED' and info['ExitCode'] == '3:0'
  assert 'Stopping on SIGTERM' in read(out), read(out)[-3000:]
  assert ckpt_step(logdir) >= stopped
  time.sleep(15)  # Longer than the requeue delay (cred_expire=10).
  assert job(cluster, jobid)['JobState'] == 'CANCELLED'
  assert job(cluster, jobid)['Restarts'] == '1'


def test_multinode_tasks(cluster, tmp_path):
  # One node here, so two tasks on it; each srun task runs "python".
  fake = tmp_path / 'python'
  fake.write_text(
      '#!/usr/bin/env bash\n'
      'echo "task $SLURM_PROCID of $SLURM_NTASKS on $SLURM_JOB_NODELIST: $*"\n')
  fake.chmod(0o755)
  out = cluster['tmp'] / 'multinode.out'
  jobid = sbatch(cluster, '--nodes=1', '--ntasks-per-node=2',
                 f'--output={out}', str(SLURM / 'multinode.sbatch'),
                 '--logdir', '/shared/run', env=dict(PYTHON=str(fake)))
  info = wait_state(cluster, jobid, ENDED, 60)
  text = read(out)
  assert info['JobState'] == 'COMPLETED', text
  node = info['NodeList']
  for rank in (0, 1):
    assert (f'task {rank} of 2 on {node}: dreamerv3/main.py --logdir '
            '/shared/run') in text, text
