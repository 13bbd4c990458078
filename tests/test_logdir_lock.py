"""One run per logdir, with real processes: a live holder refuses a second
command with one line naming it (exit code 2, nothing written), the lock
dies with its process (SIGKILL included), and the commands of one parallel
job running different parts share a logdir."""

import json
import os
import pathlib
import signal
import subprocess
import sys
import time

import pytest

from embodied.core.logdir_lock import LogdirBusy, LogdirLock

ROOT = pathlib.Path(__file__).resolve().parent.parent

HOLD = '''
import sys, time
sys.path.insert(0, {root!r})
from embodied.core.logdir_lock import LogdirLock, LogdirBusy
parts = {parts!r}
try:
  LogdirLock({logdir!r}, parts).acquire()
except LogdirBusy as e:
  print('busy', e, flush=True)
  sys.exit(2)
print('held', flush=True)
time.sleep(600)
'''


def hold(logdir, parts=None):
  """A process that holds the logdir (or parts of it) until killed."""
  proc = subprocess.Popen(
      [sys.executable, '-c', HOLD.format(
          root=str(ROOT), logdir=str(logdir), parts=parts)],
      stdout=subprocess.PIPE, text=True)
  line = proc.stdout.readline()
  if not line.startswith('held'):
    proc.wait()  # Refused: it exits.
  return proc, line


def kill(proc):
  proc.send_signal(signal.SIGKILL)
  proc.wait()


def test_second_process_is_refused_until_the_holder_is_killed(tmp_path):
  holder, line = hold(tmp_path)
  try:
    assert line.startswith('held')
    info = json.loads((tmp_path / 'lock').read_text())
    assert info['pid'] == holder.pid and info['command']
    with pytest.raises(LogdirBusy) as e:
      # This test process is a second process to the holder.
      LogdirLock(tmp_path).acquire()
    message = str(e.value)
    assert '\n' not in message
    assert f'pid {holder.pid} on ' in message and str(tmp_path) in message
  finally:
    kill(holder)
  # SIGKILL: the kernel dropped the lock, nobody had to clean up.
  lock = LogdirLock(tmp_path).acquire()
  assert json.loads((tmp_path / 'lock').read_text())['pid'] == os.getpid()
  lock.release()


def test_parts_of_one_job_share_the_logdir_but_not_a_part(tmp_path):
  learner, line = hold(tmp_path, ['learner', 'replay'])
  assert line.startswith('held')
  actor, line = hold(tmp_path, ['actor', 'envs0'])
  try:
    assert line.startswith('held')  # Another part of the same job.
    envs, line = hold(tmp_path, ['envs1'])
    assert line.startswith('held')
    kill(envs)
    # The same part twice: refused, naming the command that runs it.
    second, line = hold(tmp_path, ['envs0'])
    assert second.returncode == 2
    assert line.startswith('busy') and f'pid {actor.pid}' in line
    # A whole run is refused while any part runs, naming those parts.
    with pytest.raises(LogdirBusy) as e:
      LogdirLock(tmp_path).acquire()
    assert f'pid {learner.pid}' in str(e.value)
    assert f'pid {actor.pid}' in str(e.value)
  finally:
    kill(actor)
    kill(learner)
  whole, line = hold(tmp_path)
  try:
    assert line.startswith('held')
    part, line = hold(tmp_path, ['learner'])
    assert part.returncode == 2 and f'pid {whole.pid}' in line
  finally:
    kill(whole)


def test_main_refuses_a_live_logdir_before_writing(tmp_path):
  logdir = tmp_path / 'run'
  holder, line = hold(logdir)
  try:
    assert line.startswith('held')
    before = sorted(p.name for p in logdir.iterdir())
    proc = subprocess.run(
        [sys.executable, 'dreamerv3/main.py', '--configs', 'debug',
         '--task', 'dummy_vector', '--logdir', str(logdir)],
        cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr[-3000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith('Error: The logdir ')
    assert f'pid {holder.pid} on ' in lines[0]
    assert sorted(p.name for p in logdir.iterdir()) == before == ['lock']
  finally:
    kill(holder)


def test_killed_run_does_not_block_its_resume(tmp_path):
  logdir = tmp_path / 'run'
  cmd = [sys.executable, 'dreamerv3/main.py', '--configs', 'debug',
         '--task', 'dummy_vector', '--logdir', str(logdir),
         '--jax.cache_dir', str(tmp_path / 'jax_cache'),
         '--run.save_every', '1e6']
  first = subprocess.Popen(cmd + ['--run.steps', '1e6'], cwd=ROOT,
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                           text=True)
  try:
    deadline = time.time() + 240
    while not (logdir / 'config.yaml').exists():
      assert first.poll() is None and time.time() < deadline
      time.sleep(0.2)
    second = subprocess.run(cmd + ['--run.steps', '10'], cwd=ROOT,
                            capture_output=True, text=True, timeout=300)
    assert second.returncode == 2, second.stderr[-3000:]
    assert f'pid {first.pid}' in second.stderr
  finally:
    kill(first)
  third = subprocess.run(cmd + ['--run.steps', '10'], cwd=ROOT,
                         capture_output=True, text=True, timeout=300)
  assert third.returncode == 0, third.stderr[-3000:]
  assert 'Saved checkpoint' in third.stdout


def test_main_names_a_logdir_it_cannot_create(tmp_path):
  (tmp_path / 'file').write_text('')  # Root ignores permissions: a file.
  proc = subprocess.run(
      [sys.executable, 'dreamerv3/main.py', '--configs', 'debug',
       '--task', 'dummy_vector', '--logdir', str(tmp_path / 'file' / 'run')],
      cwd=ROOT, capture_output=True, text=True, timeout=300)
  assert proc.returncode == 2, proc.stderr[-3000:]
  assert proc.stderr.strip().splitlines() == [
      f'Error: Cannot write to the logdir {tmp_path}/file/run: Not a '
      'directory']
