"""Stop on SIGUSR1/SIGTERM: the handler only records the signal, the train
loop saves a checkpoint and main.py exits with status 3; rerunning the same
command resumes from that checkpoint."""

import os
import pathlib
import re
import signal
import subprocess
import sys
import time

import pytest

from embodied.core import Preemption
from embodied.core.preempt import EXIT_CODE

ROOT = pathlib.Path(__file__).resolve().parent.parent


def test_records_first_signal_and_restores_handlers():
  seen = []
  term = signal.getsignal(signal.SIGTERM)
  previous = signal.signal(signal.SIGUSR1, lambda *_: seen.append(1))
  try:
    preempt = Preemption()
    assert not preempt.requested
    os.kill(os.getpid(), signal.SIGTERM)
    os.kill(os.getpid(), signal.SIGUSR1)
    assert preempt.requested and preempt.signal == 'SIGTERM'
    assert not seen  # Ours replaced the earlier handler while installed.
    preempt.close()
    os.kill(os.getpid(), signal.SIGUSR1)
    assert seen == [1]
    assert signal.getsignal(signal.SIGTERM) == term
  finally:
    signal.signal(signal.SIGUSR1, previous)


def test_configurable_signals():
  usr2 = signal.getsignal(signal.SIGUSR2)
  with Preemption(['SIGUSR2']) as preempt:
    assert signal.getsignal(signal.SIGUSR1) != preempt._handle
    os.kill(os.getpid(), signal.SIGUSR2)
    assert preempt.signal == 'SIGUSR2'
  assert signal.getsignal(signal.SIGUSR2) == usr2


def ckpt_step(logdir):
  latest = logdir / 'ckpt' / 'latest'
  if not latest.exists():
    return None
  return int(latest.read_text().strip().rsplit('-', 1)[1])


def test_sigusr1_saves_exits_and_resumes(tmp_path):
  logdir = tmp_path / 'run'
  env = dict(os.environ, PYTHONUNBUFFERED='1')
  # No periodic checkpoint: the only one is the one the signal causes.
  cmd = [sys.executable, 'dreamerv3/main.py', '--configs', 'debug',
         '--task', 'dummy_vector', '--logdir', str(logdir),
         '--jax.cache_dir', str(tmp_path / 'jax_cache'),
         '--run.save_every', '1e6', '--run.log_every', '1']
  out = tmp_path / 'first.out'
  with open(out, 'w') as log:
    proc = subprocess.Popen(
        cmd + ['--run.steps', '1e6'], cwd=ROOT, env=env, stdout=log,
        stderr=subprocess.STDOUT)
    try:
      deadline = time.time() + 240  # Compiling takes long on a busy machine.
      # Wait until it trains (train metrics logged): a signal during the
      # first compile would only be seen once that compile ends.
      while '"train/loss/' not in _read(logdir / 'metrics.jsonl'):
        assert proc.poll() is None, out.read_text()[-3000:]
        assert time.time() < deadline, out.read_text()[-3000:]
        time.sleep(0.2)
      assert ckpt_step(logdir) is None
      sent = time.time()
      proc.send_signal(signal.SIGUSR1)
      proc.wait(timeout=30)
    finally:
      if proc.poll() is None:
        proc.kill()
        proc.wait()
  text = out.read_text()
  assert proc.returncode == EXIT_CODE, text[-3000:]
  assert time.time() - sent < 30
  match = re.search(r'Stopping on SIGUSR1 at step ([\d,]+)', text)
  assert match, text[-3000:]
  stopped = int(match.group(1).replace(',', ''))
  assert stopped > 0 and ckpt_step(logdir) == stopped
  assert (logdir / 'ckpt' / (logdir / 'ckpt' / 'latest').read_text().strip()
          / 'done').exists()
  assert 'Traceback' not in text

  proc = subprocess.run(
      cmd + ['--run.steps', str(stopped + 10)], cwd=ROOT, env=env,
      capture_output=True, text=True, timeout=240)
  assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
  assert f'Start training at step {stopped:,} ' in proc.stdout
  assert ckpt_step(logdir) >= stopped + 10


def _read(path):
  try:
    return pathlib.Path(path).read_text()
  except FileNotFoundError:
    return ''


@pytest.mark.slow  # Two processes compile and train: minutes on 2 cores.
def test_two_processes_stop_and_save_together(tmp_path):
  """A stop signal to one process of a multi-host job stops both at the
  same step with both checkpoints written (the loop agrees on stop and
  save each iteration instead of leaving a peer waiting in a collective)."""
  import socket
  with socket.socket() as sock:
    sock.bind(('127.0.0.1', 0))
    port = sock.getsockname()[1]
  logdir = tmp_path / 'run'
  env = dict(os.environ, PYTHONUNBUFFERED='1', JAX_PLATFORMS='cpu')
  procs, outs = [], []
  for i in range(2):
    cmd = [sys.executable, 'dreamerv3/main.py', '--configs', 'debug',
           '--task', 'dummy_vector', '--logdir', str(logdir),
           '--run.steps', '1e6', '--run.save_every', '1e6',
           '--run.log_every', '1', '--jax.distributed.mode', 'manual',
           '--jax.distributed.coordinator', f'127.0.0.1:{port}',
           '--jax.distributed.num_processes', '2',
           '--jax.distributed.process_id', str(i)]
    outs.append(tmp_path / f'{i}.out')
    procs.append(subprocess.Popen(
        cmd, cwd=ROOT, env=env, stdout=open(outs[-1], 'w'),
        stderr=subprocess.STDOUT))
  try:
    deadline = time.time() + 900
    while '"train/loss/' not in _read(logdir / 'metrics.jsonl'):
      for proc, out in zip(procs, outs):
        assert proc.poll() is None, out.read_text()[-3000:]
      assert time.time() < deadline, outs[1].read_text()[-3000:]
      time.sleep(0.2)
    procs[1].send_signal(signal.SIGUSR1)
    for proc, out in zip(procs, outs):
      proc.wait(timeout=120)
      assert proc.returncode == EXIT_CODE, out.read_text()[-3000:]
  finally:
    for proc in procs:
      if proc.poll() is None:
        proc.kill()
  first = ckpt_step(logdir)
  assert first is not None and first > 0
  assert ckpt_step(logdir / 'process1') == first
  assert 'Stopping on a stop signal to another process' in outs[0].read_text()
  assert 'Stopping on SIGUSR1' in outs[1].read_text()
