"""Checkpoints under failure: a full or unwritable disk keeps the previous
checkpoint and raises one clear CheckpointError, a save killed mid-way
leaves the previous checkpoint loadable, replay chunk files a checkpoint
needs survive, and the cli reports the error as one line with exit code 1."""

import errno
import os
import pathlib
import signal
import subprocess
import sys
import textwrap
import time
import warnings

import numpy as np
import pytest

from embodied.core import checkpoint as checkpoint_module
from embodied.core.checkpoint import Checkpoint, CheckpointError
from embodied.core.replay import Replay

ROOT = pathlib.Path(__file__).resolve().parent.parent


class Value:
  """A checkpointed object holding one value; shards=True saves it as a
  generator of shards, as large objects do."""

  def __init__(self, value=0, shards=False):
    self.value = value
    self.shards = shards

  def save(self):
    if self.shards:
      return (part for part in [self.value, self.value])
    return {'value': self.value}

  def load(self, data):
    if self.shards:
      self.value = list(data)[0]
    else:
      self.value = data['value']


def make(directory, a=0, b=0, keep=1):
  checkpoint = Checkpoint(directory, keep=keep)
  objects = {'a': Value(a), 'b': Value(b, shards=True)}
  for name, obj in objects.items():
    checkpoint.register(name, obj)
  return checkpoint, objects


def entries(directory):
  return sorted(path.name for path in pathlib.Path(directory).iterdir())


@pytest.mark.parametrize('code, text', [
    (errno.ENOSPC, 'No space left on device'),
    (errno.EACCES, 'Permission denied'),
    (errno.EROFS, 'Read-only file system')])
def test_failed_write_keeps_previous_checkpoint(
    tmp_path, monkeypatch, code, text):
  checkpoint, objects = make(tmp_path / 'ckpt', a=1, b=1)
  first = checkpoint.save(10)
  objects['a'].value = objects['b'].value = 2
  write = checkpoint_module.write_file
  calls = []

  def failing(path, data):
    calls.append(path)
    if len(calls) == 2:  # After the first file of the new folder.
      raise OSError(code, os.strerror(code), str(path))
    write(path, data)
  monkeypatch.setattr(checkpoint_module, 'write_file', failing)
  with pytest.raises(CheckpointError) as info:
    checkpoint.save(20)
  error = info.value
  assert isinstance(error, OSError) and error.errno == code
  folder = pathlib.Path(str(calls[-1])).parent
  assert str(error) == (
      f'Could not write checkpoint to {folder}: {text}; the previous '
      f'checkpoint {first} is kept')
  # The partial folder is gone and `latest` still names the first save.
  assert entries(tmp_path / 'ckpt') == sorted(['latest', first.name])
  monkeypatch.setattr(checkpoint_module, 'write_file', write)
  checkpoint, objects = make(tmp_path / 'ckpt')
  assert checkpoint.latest() == first
  checkpoint.load()
  assert objects['a'].value == 1 and objects['b'].value == 1


def test_failed_first_save_says_nothing_is_kept(tmp_path, monkeypatch):
  checkpoint, _ = make(tmp_path / 'ckpt')

  def full(path, data):
    raise OSError(errno.ENOSPC, 'No space left on device', str(path))
  monkeypatch.setattr(checkpoint_module, 'write_file', full)
  with pytest.raises(CheckpointError, match=(
      r'^Could not write checkpoint to .*-000000000005: No space left on '
      r'device; there is no earlier checkpoint$')):
    checkpoint.save(5)
  assert entries(tmp_path / 'ckpt') == []
  assert checkpoint.latest() is None


def test_unwritable_directory_fails_clearly(tmp_path):
  blocker = tmp_path / 'file'
  blocker.write_text('')  # A file where the folder would go: ENOTDIR.
  checkpoint, _ = make(blocker / 'ckpt')
  with pytest.raises(CheckpointError, match=(
      f'^Could not write checkpoint to {blocker}/ckpt/.*; there is no '
      'earlier checkpoint$')):
    checkpoint.save(1)


def test_errors_other_than_oserror_pass_through(tmp_path):
  checkpoint, objects = make(tmp_path / 'ckpt')
  first = checkpoint.save(1)
  objects['a'].save = lambda: 1 / 0
  with pytest.raises(ZeroDivisionError):
    checkpoint.save(2)
  assert entries(tmp_path / 'ckpt') == sorted(['latest', first.name])


CHILD = textwrap.dedent('''
    import pathlib, sys, time
    sys.path.insert(0, {root!r})
    from embodied.core.checkpoint import Checkpoint

    class Value:
      def __init__(self, pause=False):
        self.value, self.pause = 0, pause
      def save(self):
        if self.pause and self.value == 2:
          pathlib.Path({flag!r}).write_text('paused')
          time.sleep(120)  # Killed here.
        return {{'value': self.value}}
      def load(self, data):
        self.value = data['value']

    checkpoint = Checkpoint({directory!r})
    a, b = Value(), Value(pause=True)
    checkpoint.register('a', a)
    checkpoint.register('b', b)
    a.value = b.value = 1
    checkpoint.save(1)
    a.value = b.value = 2
    checkpoint.save(2)
''')


def test_killed_save_keeps_previous_checkpoint(tmp_path):
  directory, flag = tmp_path / 'ckpt', tmp_path / 'paused'
  script = CHILD.format(
      root=str(ROOT), flag=str(flag), directory=str(directory))
  proc = subprocess.Popen([sys.executable, '-c', script])
  try:
    deadline = time.time() + 60
    while not flag.exists():
      assert proc.poll() is None, 'child exited before the second save'
      assert time.time() < deadline, 'child never reached the second save'
      time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
  finally:
    if proc.poll() is None:
      proc.kill()
      proc.wait()
  folders = [name for name in entries(directory) if name != 'latest']
  first = (directory / 'latest').read_text().strip()
  partial = [name for name in folders if name != first]
  assert first.endswith('-000000000001') and len(partial) == 1
  assert entries(directory / partial[0]) == ['a.pkl']  # No `done`.
  checkpoint, objects = make(directory)
  objects['b'] = Value()
  checkpoint.register('b', objects['b'])
  assert checkpoint.latest().name == first
  checkpoint.load()
  assert objects['a'].value == 1 and objects['b'].value == 1
  # The next save removes the partial folder and replaces the first.
  third = checkpoint.save(3)
  assert entries(directory) == sorted(['latest', third.name])
  assert checkpoint.latest() == third


def test_replay_files_survive_until_a_newer_checkpoint(tmp_path):
  """A run evicts chunks after its checkpoint and is killed: the resumed
  replay still finds every chunk file that checkpoint names."""
  kwargs = dict(length=4, capacity=48, chunksize=16)

  def run(replay, steps, start):
    for t in range(start, start + steps):
      replay.add({'t': np.int64(t)}, 0)

  replay = Replay(**kwargs, directory=tmp_path / 'replay')
  checkpoint = Checkpoint(tmp_path / 'ckpt')
  checkpoint.register('replay', replay)
  run(replay, 100, 0)
  checkpoint.save(100)
  expected = len(replay)
  run(replay, 200, 100)  # Evicts every chunk the checkpoint names.
  resumed = Replay(**kwargs, directory=tmp_path / 'replay')
  checkpoint = Checkpoint(tmp_path / 'ckpt')
  checkpoint.register('replay', resumed)
  with warnings.catch_warnings():
    warnings.simplefilter('error')  # No missing chunk file.
    checkpoint.load()
  assert len(resumed) == expected
  batch = resumed.sample(64)
  assert (np.diff(batch['t'], axis=1) == 1).all()
  assert batch['t'].max() < 100
  # Later checkpoints drop the files nothing needs: those of the two newest
  # checkpoints stay (a damaged newest one falls back to the one before).
  named = []
  for step in (150, 200, 250):
    run(resumed, 50, step - 50)
    checkpoint.save(step)
    named.append(
        {i['name'] for i in resumed.save()['slots'].values() if i['name']})
  assert named[0] - named[1] - named[2]  # Some files only the oldest names.
  assert set(entries(tmp_path / 'replay')) == named[1] | named[2]


def test_cli_reports_checkpoint_error(monkeypatch, capsys):
  monkeypatch.syspath_prepend(str(ROOT))
  from dreamerv3 import main as main_module

  def failing():
    raise CheckpointError(
        'Could not write checkpoint to /x/ckpt/2: No space left on device; '
        'the previous checkpoint /x/ckpt/1 is kept', errno.ENOSPC)
  monkeypatch.setattr(main_module, 'main', failing)
  with pytest.raises(SystemExit) as info:
    main_module.cli()
  assert info.value.code == 1
  assert capsys.readouterr().err == (
      'Error: Could not write checkpoint to /x/ckpt/2: No space left on '
      'device; the previous checkpoint /x/ckpt/1 is kept\n')


def test_find_accepts_every_way_of_naming_a_checkpoint(tmp_path):
  logdir = tmp_path / 'run'
  saver, _ = make(logdir / 'ckpt', a=1)
  first = saver.save(1)
  newest = saver.save(2)
  assert first != newest
  for path in (logdir, logdir / 'ckpt', logdir / 'ckpt' / 'latest'):
    assert str(checkpoint_module.find(path)) == str(newest), path
  # A named checkpoint folder is taken as it is.
  (logdir / 'ckpt' / 'old').mkdir()
  assert checkpoint_module.find(newest) is not None
  assert str(checkpoint_module.find(newest)) == str(newest)
  assert checkpoint_module.find(tmp_path / 'nothing') is None
  assert checkpoint_module.find(logdir / 'ckpt' / 'old') is None


def test_bad_from_checkpoint_fails_before_the_logdir(tmp_path):
  from dreamerv3 import main
  with pytest.raises(main.ConfigError, match='run.from_checkpoint'):
    main.main(['--configs', 'debug', '--logdir', str(tmp_path / 'new'),
               '--run.from_checkpoint', str(tmp_path / 'missing')])
  assert not (tmp_path / 'new').exists()


def damage(folder, name='a.pkl'):
  """Cuts a file of a complete checkpoint short, as a failing disk would."""
  path = pathlib.Path(folder) / name
  data = path.read_bytes()
  path.write_bytes(data[:len(data) // 2])


def test_damaged_newest_checkpoint_falls_back_with_one_warning(
    tmp_path, capsys):
  saver, _ = make(tmp_path, a=1, keep=2)
  older = saver.save(1)
  saver._objects['a'].value = 2
  newest = saver.save(2)
  assert saver.latest() == newest
  size = len((newest / 'a.pkl').read_bytes())
  damage(newest)
  assert checkpoint_module.verify(newest) == (
      f'a.pkl has {size // 2:,} bytes, {size:,} when written')
  assert saver.latest() == older
  err = capsys.readouterr().err.splitlines()
  assert len(err) == 1 and str(newest) in err[0] and 'damaged' in err[0]
  loader, objects = make(tmp_path)
  loader.load(loader.latest())
  assert objects['a'].value == 1
  # The same bytes with one altered: the size matches, the checksum not.
  path = older / 'a.pkl'
  data = bytearray(path.read_bytes())
  data[-2] ^= 1
  path.write_bytes(bytes(data))
  assert 'checksum' in checkpoint_module.verify(older)
  assert loader.latest() is None
  assert checkpoint_module.find(tmp_path) is None
  assert loader.complete() == [newest, older]


def test_a_save_that_does_not_read_back_keeps_the_previous(
    tmp_path, monkeypatch):
  saver, _ = make(tmp_path, a=1)
  previous = saver.save(1)
  real = checkpoint_module.write_file

  def lossy(path, data):  # A disk that drops the tail of one file.
    real(path, data[:-1] if pathlib.Path(path).name == 'a.pkl' else data)
  monkeypatch.setattr(checkpoint_module, 'write_file', lossy)
  with pytest.raises(CheckpointError, match='does not read back'):
    saver.save(2)
  monkeypatch.undo()
  assert saver.latest() == previous
  assert entries(tmp_path) == sorted(['latest', previous.name])


def test_resume_refuses_a_logdir_whose_checkpoints_are_all_damaged(tmp_path):
  from embodied.run.train import resume
  saver, _ = make(tmp_path, a=1)
  damage(saver.save(1))
  loader, _ = make(tmp_path)
  with pytest.raises(CheckpointError, match='reads back intact'):
    resume(loader)


@pytest.mark.slow  # Three runs of the agent: a minute or two on 2 cores.
def test_run_resumes_from_the_older_checkpoint_when_the_newest_is_damaged(
    tmp_path):
  logdir = tmp_path / 'run'
  env = dict(os.environ, PYTHONUNBUFFERED='1')
  cmd = [sys.executable, 'dreamerv3/main.py', '--configs', 'debug',
         '--task', 'dummy_vector', '--logdir', str(logdir),
         '--jax.cache_dir', str(tmp_path / 'jax_cache'),
         '--run.log_every', '1',
         # Only the final saves: a periodic one (seconds) would depend on
         # the machine's speed.
         '--run.save_every', '1e6']

  def run(*flags):
    return subprocess.run(
        cmd + list(flags), cwd=ROOT, env=env, capture_output=True,
        text=True, timeout=300)

  # Two runs leave two checkpoints (a run keeps the two newest).
  for steps in (40, 80):
    proc = run('--run.steps', str(steps))
    assert proc.returncode == 0, proc.stderr[-3000:]
  saver = Checkpoint(logdir / 'ckpt')
  newest, older = saver.complete()
  assert newest.name.endswith('-000000000080'), newest
  assert older.name.endswith('-000000000040'), older
  damage(newest, 'agent.pkl')

  proc = run('--run.steps', '100')
  assert proc.returncode == 0, proc.stderr[-3000:]
  warnings_ = [l for l in proc.stderr.splitlines() if 'damaged' in l]
  assert len(warnings_) == 1 and newest.name in warnings_[0], proc.stderr
  assert 'agent.pkl' in warnings_[0]
  assert 'Start training at step 40 ' in proc.stdout, proc.stdout[-3000:]
  assert saver.latest().name.endswith('-000000000100')

  # Every checkpoint damaged: the run stops with one line and exit code 1
  # and leaves the logdir as it was instead of starting over at step 0.
  for folder in saver.complete():
    damage(folder, 'agent.pkl')
  before = {p: p.stat().st_size for p in logdir.rglob('*') if p.is_file()}
  proc = run('--run.steps', '200')
  assert proc.returncode == 1, proc.stderr[-3000:]
  errors = [l for l in proc.stderr.splitlines() if l.startswith('Error:')]
  assert len(errors) == 1 and 'reads back intact' in errors[0], proc.stderr
  assert 'Traceback' not in proc.stderr
  assert 'Start training' not in proc.stdout
  after = {p: p.stat().st_size for p in logdir.rglob('*') if p.is_file()}
  for path, size in before.items():  # Nothing lost or cut short.
    assert after.get(path, -1) >= size, path
  assert {p for p in after if 'ckpt' in p.parts} == {
      p for p in before if 'ckpt' in p.parts}
