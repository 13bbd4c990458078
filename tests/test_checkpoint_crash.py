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


def make(directory, a=0, b=0):
  checkpoint = Checkpoint(directory)
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
  # The resumed run's next checkpoint drops the files nothing needs.
  run(resumed, 50, 100)
  checkpoint.save(150)
  named = {i['name'] for i in resumed.save()['slots'].values() if i['name']}
  assert set(entries(tmp_path / 'replay')) == named


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
