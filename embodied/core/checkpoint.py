"""Checkpoints in the logdir that survive being killed at any moment and
fail cleanly when the disk does.

Layout (the one elements.checkpoint reads): DIR/<timestamp>-<step>/ holds
NAME.pkl per registered object (NAME-0000.pkl, ... when its save() returns
a generator) and a `done` marker, which lists every file with its size and
SHA-256; DIR/latest names the newest complete folder.

Invariants:
- A folder is complete iff it holds `done`. The marker is written after
  every other file of the folder has been flushed to the disk (fsync), so a
  complete folder is never half-written, also after a crash of the machine,
  and write errors that a disk reports late (at fsync) happen before it.
- A complete folder verifies iff every file the marker lists has its size
  and checksum (a marker without a list, from before the lists, verifies).
  A new folder is read back and verified before it becomes `latest`; the
  previous checkpoints are removed only after that, and `keep` of them stay.
- `latest` is replaced by an atomic rename only once the new folder is
  complete and verified, and older folders are removed only after that.
  Removal deletes the marker first, so a half-removed folder never looks
  complete.
- Hence after a kill at any moment (SIGKILL included) latest() is the last
  complete checkpoint; a checkpoint damaged later (a truncated or altered
  file) is skipped by latest() with one warning, which falls back to the
  newest one that verifies. Folders a killed save left behind are removed
  by the next save.
- A save that fails with an OSError (disk full, no permission, read-only
  filesystem, ...) removes its partial folder, leaves `latest` alone and
  raises CheckpointError, whose message is one line naming the folder, the
  reason and the checkpoint that is kept.
- Once a save is complete, registered objects that have a committed()
  method are told (the replay deletes chunk files only once no complete
  checkpoint refers to them).
"""

import hashlib
import inspect
import json
import os
import pickle
import sys
import warnings

import elements
from elements import checkpoint as ckpt


class CheckpointError(OSError):
  """Run state could not be written to the logdir (disk full, no permission,
  read-only filesystem, ...). str() is one line saying what could not be
  written, why, and what is kept; errno is that of the underlying error."""

  def __init__(self, message, errno=None):
    super().__init__(message)
    self.errno = errno


def reason(error):
  """The OS's short description of an OSError, e.g. 'No space left on
  device', without errno number or file name."""
  return error.strerror or str(error) or type(error).__name__


def write_file(path, data):
  """Writes bytes to path and flushes them to the disk before returning."""
  with open(str(path), 'wb') as f:
    f.write(data)
    f.flush()
    os.fsync(f.fileno())


def sync_dir(path):
  """Makes renames and new files in the directory durable. Best effort:
  some filesystems cannot fsync a directory, which only weakens the
  guarantee against machine crashes, not against the process being killed."""
  try:
    fd = os.open(str(path), os.O_RDONLY)
  except OSError:
    return
  try:
    os.fsync(fd)
  except OSError:
    pass
  finally:
    os.close(fd)


def verify(folder):
  """None if the complete folder verifies, else one line saying why not."""
  folder = elements.Path(folder)
  text = (folder / 'done').read_text()
  if not text.strip():
    return None  # A marker from before the file lists.
  try:
    files = json.loads(text)['files']
  except (ValueError, KeyError, TypeError):
    return 'its done marker is unreadable'
  for name, (size, digest) in sorted(files.items()):
    path = folder / name
    if not path.exists():
      return f'{name} is missing'
    data = path.read_bytes()
    if len(data) != size:
      return f'{name} has {len(data):,} bytes, {size:,} when written'
    if hashlib.sha256(data).hexdigest() != digest:
      return f'{name} differs from what was written (checksum)'
  return None


class Checkpoint:

  def __init__(self, directory, keep=1):
    self._directory = elements.Path(directory)
    self._keep = keep
    self._objects = {}

  @property
  def directory(self):
    return self._directory

  def register(self, name, obj):
    if not (callable(getattr(obj, 'save', None)) and
            callable(getattr(obj, 'load', None))):
      raise ValueError(f"Checkpointed object '{name}' needs save() and load()")
    self._objects[name] = obj

  def latest(self):
    """Newest complete checkpoint folder that verifies, or None; a newer
    damaged one is skipped with one warning line."""
    for folder in self.complete():
      problem = verify(folder)
      if problem is None:
        return folder
      print(f'Warning: checkpoint {folder} is damaged ({problem}); trying '
            'an older one.', file=sys.stderr)
    return None

  def complete(self):
    """Complete checkpoint folders, newest first (the `latest` pointer's
    first), whether they verify or not."""
    folders = []
    pointer = self._directory / 'latest'
    if pointer.exists():
      folder = self._directory / pointer.read_text().strip()
      if ckpt.exists(folder):
        folders.append(folder)
    if self._directory.exists():
      folders += sorted((
          f for f in self._directory.glob('*')
          if f.name not in ('latest', 'latest.tmp') and ckpt.exists(f)
          and f not in folders), reverse=True)
    return folders

  def _newest_complete(self):
    folders = self.complete()
    return folders[0] if folders else None

  def save(self, step):
    """Writes a new complete checkpoint and points `latest` to it. Raises
    CheckpointError if the disk refuses; the previous checkpoint stays."""
    name = f'{elements.timestamp(millis=True)}-{int(step):012d}'
    folder = self._directory / name
    previous = self._newest_complete()
    tmp = self._directory / 'latest.tmp'
    if folder.exists():  # Outside the try: the cleanup would remove it.
      raise FileExistsError(f'Checkpoint folder {folder} exists already')
    try:
      self._directory.mkdir()
      self._write(folder)
      problem = verify(folder)  # Read back before it replaces anything.
      if problem:
        raise OSError(f'the new checkpoint does not read back: {problem}')
      write_file(tmp, name.encode())
      # The commit point: from here on the new folder is the checkpoint.
      os.replace(str(tmp), str(self._directory / 'latest'))
    except BaseException as e:
      # Also on interrupts: a partial folder is never worth keeping.
      self._discard(folder)
      self._discard(tmp)
      if not isinstance(e, OSError) or isinstance(e, CheckpointError):
        raise
      kept = (f'the previous checkpoint {previous} is kept' if previous
              else 'there is no earlier checkpoint')
      raise CheckpointError(
          f'Could not write checkpoint to {folder}: {reason(e)}; {kept}',
          e.errno) from e
    sync_dir(self._directory)
    self._cleanup(keep=folder)
    for obj in self._objects.values():
      committed = getattr(obj, 'committed', None)
      if callable(committed):
        committed()
    print(f'Saved checkpoint: {folder}')
    return folder

  def load(self, folder=None, keys=None):
    folder = elements.Path(folder) if folder else self.latest()
    if folder is None or not ckpt.exists(folder):
      raise FileNotFoundError(f'No complete checkpoint at {folder}')
    keys = keys or list(self._objects)
    ckpt.load(folder, {k: self._objects[k].load for k in keys})
    print(f'Loaded checkpoint: {folder}')
    return folder

  def _write(self, folder):
    folder.mkdir()
    files = {}

    def put(name, data):
      data = pickle.dumps(data)
      write_file(folder / name, data)
      files[name] = (len(data), hashlib.sha256(data).hexdigest())

    for key, obj in self._objects.items():
      data = obj.save()
      if inspect.isgenerator(data):
        for index, shard in enumerate(data):
          put(f'{key}-{index:04d}.pkl', shard)
      else:
        put(f'{key}.pkl', data)
    sync_dir(folder)
    write_file(folder / 'done', json.dumps({'files': files}).encode())
    sync_dir(folder)

  def _cleanup(self, keep):
    """Removes complete folders beyond the newest `keep` ones and every
    incomplete folder (left by a killed or failed save). Best effort: the
    new checkpoint is complete, so a folder that cannot be removed now only
    costs disk space until a later save."""
    folders = sorted(
        f for f in self._directory.glob('*')
        if f.name not in ('latest', 'latest.tmp') and f.is_dir())
    complete = [f for f in folders if ckpt.exists(f)]
    old = complete[:-self._keep] if self._keep else []
    old += [f for f in folders if not ckpt.exists(f)]
    for folder in old:
      if folder != keep and not self._discard(folder):
        warnings.warn(f'Could not remove old checkpoint folder {folder}.')

  def _discard(self, path):
    """Removes a file or folder if present, the `done` marker first; returns
    False if that failed."""
    try:
      if path.is_dir():
        marker = path / 'done'
        if marker.exists():
          marker.remove()
        path.remove(recursive=True)
      elif path.exists():
        path.remove()
    except OSError:
      return False
    return True


def find(path):
  """The complete checkpoint folder that `path` names, or None. `path` may
  be a checkpoint folder, a checkpoints directory or its `latest` pointer
  file (then its newest complete checkpoint), or a logdir (its ckpt/)."""
  path = elements.Path(os.path.expanduser(str(path)))
  if ckpt.exists(path):
    return path if verify(path) is None else None
  if os.path.isfile(str(path)) and path.name == 'latest':
    return Checkpoint(path.parent).latest()
  for candidate in (path / 'ckpt', path):
    found = Checkpoint(candidate).latest()
    if found:
      return found
  return None
