"""scripts/slurm/ without SLURM: the #SBATCH header sbatch reads, and the
batch shell's signal forwarding and requeue, run with bash and stand-ins
for python, scontrol and srun. tests/test_slurm.py runs them on a real
SLURM (marker slurm)."""

import json
import os
import pathlib
import signal
import subprocess
import sys
import time

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
SLURM = ROOT / 'scripts' / 'slurm'
SCRIPTS = ['run.sbatch', 'array.sbatch', 'multinode.sbatch']


def header(path):
  """The #SBATCH options sbatch applies: it stops reading them at the
  first line that is neither blank nor a comment."""
  options = []
  for line in path.read_text().splitlines()[1:]:
    if line.strip() and not line.startswith('#'):
      break
    if line.startswith('#SBATCH '):
      options.append(line.split(None, 1)[1].strip())
  return options


@pytest.mark.parametrize('name', SCRIPTS)
def test_header_requeues_and_signals(name):
  path = SLURM / name
  subprocess.run(['bash', '-n', str(path)], check=True)
  assert os.access(path, os.X_OK)
  options = header(path)
  assert '--requeue' in options
  assert '--open-mode=append' in options  # A requeue keeps the log.
  signals = [o for o in options if o.startswith('--signal=')]
  assert len(signals) == 1
  kind, _, lead = signals[0].split('=', 1)[1].partition('@')
  assert kind == 'B:USR1' and int(lead) >= 60
  # Every #SBATCH line in the file is in the header sbatch reads.
  assert len(options) == path.read_text().count('\n#SBATCH ')


def test_multinode_header():
  options = header(SLURM / 'multinode.sbatch')
  assert '--ntasks-per-node=1' in options
  assert any(o.startswith('--nodes=') for o in options)


def stand_ins(tmp_path):
  """A python that records its argv and environment, then exits 0 or
  (FAKE_WAIT) waits for USR1/TERM and exits 3 as main.py does after
  saving; an scontrol and an srun that record their arguments."""
  bindir = tmp_path / 'bin'
  bindir.mkdir()
  (bindir / 'python').write_text(f'''#!{sys.executable}
import json, os, signal, sys, time
out = {str(tmp_path)!r}
got = []
if not os.environ.get('FAKE_EARLY'):  # Else as main.py before its handler.
  for sig in (signal.SIGUSR1, signal.SIGTERM):
    signal.signal(sig, lambda n, f: got.append(signal.Signals(n).name))
env = {{k: v for k, v in os.environ.items() if k.startswith('SLURM_')}}
json.dump({{'argv': sys.argv[1:], 'env': env}},
          open(os.path.join(out, 'python.json'), 'w'))
if os.environ.get('FAKE_WAIT'):
  open(os.path.join(out, 'ready'), 'w').close()
  while not got:
    time.sleep(0.05)
  json.dump(got, open(os.path.join(out, 'signals.json'), 'w'))
  sys.exit(3)
''')
  record = lambda tool: f'echo "$@" >> {tmp_path}/{tool}.txt\n'
  (bindir / 'scontrol').write_text('#!/usr/bin/env bash\n' +
                                   record('scontrol'))
  # srun runs its command once, after its single option.
  (bindir / 'srun').write_text('#!/usr/bin/env bash\n' + record('srun') +
                               'shift\nexec "$@"\n')
  for tool in bindir.iterdir():
    tool.chmod(0o755)
  return dict(
      os.environ, PATH=f'{bindir}{os.pathsep}{os.environ["PATH"]}',
      PYTHON='python', DREAMER_ROOT=str(ROOT), SLURM_JOB_ID='123')


def read(path):
  return path.read_text() if path.exists() else ''


def start(tmp_path, env, script, *args):
  proc = subprocess.Popen(
      ['bash', str(SLURM / script), *args], env=dict(env, FAKE_WAIT='1'),
      cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
      text=True)
  deadline = time.time() + 20
  while not (tmp_path / 'ready').exists():
    assert proc.poll() is None, proc.stdout.read()
    assert time.time() < deadline
    time.sleep(0.05)
  return proc


@pytest.mark.parametrize('script', ['run.sbatch', 'multinode.sbatch'])
def test_usr1_reaches_python_and_requeues(tmp_path, script):
  env = stand_ins(tmp_path)
  proc = start(tmp_path, env, script, '--configs', 'debug', '--logdir',
               str(tmp_path / 'run'))
  proc.send_signal(signal.SIGUSR1)  # What --signal=B:USR1 does.
  out, _ = proc.communicate(timeout=20)
  assert proc.returncode == 3, out
  assert json.loads(read(tmp_path / 'signals.json')) == ['SIGUSR1']
  assert read(tmp_path / 'scontrol.txt').split() == ['requeue', '123']
  argv = json.loads(read(tmp_path / 'python.json'))['argv']
  assert argv == ['dreamerv3/main.py', '--configs', 'debug', '--logdir',
                  str(tmp_path / 'run')]
  if script == 'multinode.sbatch':
    assert read(tmp_path / 'srun.txt').split()[0] == '--kill-on-bad-exit=0'


def test_usr1_before_the_handler_requeues(tmp_path):
  # Killed by USR1 while main.py still imports: the last checkpoint stands.
  env = dict(stand_ins(tmp_path), FAKE_EARLY='1')
  proc = start(tmp_path, env, 'run.sbatch', '--logdir', 'r')
  proc.send_signal(signal.SIGUSR1)
  out, _ = proc.communicate(timeout=20)
  assert proc.returncode == 128 + signal.SIGUSR1, out
  assert read(tmp_path / 'scontrol.txt').split() == ['requeue', '123']


def test_term_is_forwarded_without_requeue(tmp_path):
  env = stand_ins(tmp_path)
  proc = start(tmp_path, env, 'run.sbatch', '--logdir', str(tmp_path / 'r'))
  proc.send_signal(signal.SIGTERM)
  out, _ = proc.communicate(timeout=20)
  assert proc.returncode == 3, out
  assert json.loads(read(tmp_path / 'signals.json')) == ['SIGTERM']
  assert not (tmp_path / 'scontrol.txt').exists()  # scancel stays final.


def test_finished_run_is_not_requeued(tmp_path):
  env = stand_ins(tmp_path)
  proc = subprocess.run(
      ['bash', str(SLURM / 'run.sbatch'), '--logdir=' + str(tmp_path / 'r')],
      env=env, capture_output=True, text=True, timeout=20)
  assert proc.returncode == 0, proc.stdout + proc.stderr
  assert not (tmp_path / 'scontrol.txt').exists()


def test_logdir_required(tmp_path):
  env = stand_ins(tmp_path)
  proc = subprocess.run(
      ['bash', str(SLURM / 'run.sbatch'), '--configs', 'debug'],
      env=env, capture_output=True, text=True, timeout=20)
  assert proc.returncode != 0 and 'needs --logdir' in proc.stderr
  assert not (tmp_path / 'python.json').exists()


def test_repository_not_found(tmp_path):
  env = dict(stand_ins(tmp_path), DREAMER_ROOT=str(tmp_path))
  proc = subprocess.run(
      ['bash', str(SLURM / 'run.sbatch'), '--logdir', str(tmp_path)],
      env=env, capture_output=True, text=True, timeout=20)
  assert proc.returncode == 2 and 'DREAMER_ROOT' in proc.stderr


@pytest.mark.parametrize('index,task,seed', [
    (0, 'bsuite_catch/0', '0'), (2, 'bsuite_catch/0', '2'),
    (4, 'dummy_vector', '1')])
def test_array_grid_index(tmp_path, index, task, seed):
  env = dict(stand_ins(tmp_path), SLURM_ARRAY_TASK_ID=str(index),
             TASKS='bsuite_catch/0 dummy_vector', SEEDS='0 1 2',
             LOGROOT=str(tmp_path / 'xp'))
  proc = subprocess.run(
      ['bash', str(SLURM / 'array.sbatch'), '--configs', 'debug'],
      env=env, capture_output=True, text=True, timeout=20)
  assert proc.returncode == 0, proc.stdout + proc.stderr
  argv = json.loads(read(tmp_path / 'python.json'))['argv']
  logdir = tmp_path / 'xp' / task.replace('/', '-') / f'seed{seed}'
  assert argv == ['dreamerv3/main.py', '--configs', 'debug', '--task', task,
                  '--seed', seed, '--logdir', str(logdir)]
  assert (logdir / 'done').exists()
  # Done runs are skipped when the array is submitted again.
  (tmp_path / 'python.json').unlink()
  proc = subprocess.run(
      ['bash', str(SLURM / 'array.sbatch'), '--configs', 'debug'],
      env=env, capture_output=True, text=True, timeout=20)
  assert proc.returncode == 0 and 'Finished already' in proc.stdout
  assert not (tmp_path / 'python.json').exists()


def test_array_index_out_of_range(tmp_path):
  env = dict(stand_ins(tmp_path), SLURM_ARRAY_TASK_ID='6',
             TASKS='a b', SEEDS='0 1 2', LOGROOT=str(tmp_path))
  proc = subprocess.run(
      ['bash', str(SLURM / 'array.sbatch')], env=env, capture_output=True,
      text=True, timeout=20)
  assert proc.returncode == 2 and 'has 6 runs' in proc.stderr
