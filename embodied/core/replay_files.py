"""Chunk files of a replay directory, and when each may be deleted.

A completed chunk is written to NAME.tmp, flushed to the disk and renamed
to NAME (<uuid>-<chunksize>.npz); a replay's save() refers to written
chunks by name and pickles the others. Nothing a checkpoint needs is lost
when the run is killed or the disk fails, so a logdir is never left
half-written:
- A .npz file is always complete. A .tmp file is never named by a save (the
  name is recorded after the rename), and the steps of its chunk that a
  checkpoint covers are pickled in that checkpoint. So .tmp files, left by a
  kill in the middle of a write, are deleted when a replay opens the
  directory rather than reused: reusing one would need the chunk's
  bookkeeping, which no checkpoint has, and a truncated file could only be
  told apart by reading it whole.
- A chunk file stays while the newest complete checkpoint may refer to it:
  an evicted chunk named by the last load() or save() keeps its file until
  committed(), which Checkpoint calls once a save is complete. committed()
  then deletes every chunk file that neither that save nor the live buffer
  names, including files a killed run wrote after its last checkpoint.
- A write that fails with an OSError (disk full, no permission, read-only
  filesystem) raises CheckpointError with a one-line message; the chunk stays
  in memory without a name, so a later save pickles it.
- A chunk file that is missing or unreadable at load() is skipped with a
  warning; the rest of the buffer loads.
"""

import os
import uuid
import warnings
import zipfile

import numpy as np

from .checkpoint import CheckpointError, reason, sync_dir


def write_npz(path, arrays):
  """Writes the arrays to an .npz file and flushes it to the disk."""
  with open(str(path), 'wb') as f:
    np.savez(f, **arrays)
    f.flush()
    os.fsync(f.fileno())


class ChunkFiles:
  """The chunk files of one directory, and the names the checkpoints that
  may still be loaded refer to.

  The name sets are guarded by `lock`, the replay's own lock, which the
  replay holds when it calls needed(), saving() and loaded(). write(),
  read() and committed() do their file work outside it and are called
  without it.
  """

  def __init__(self, directory, chunksize, lock):
    self.directory = directory
    self.chunksize = chunksize
    self._lock = lock
    self._writing = set()  # chunk files being written now
    # Chunk files the two newest checkpoints may name: the run keeps two, so
    # that a damaged newest one can fall back to the one before.
    self._kept = set()
    self._kept_before = set()
    self._saving = set()   # chunk files the last save() named

  def open(self):
    """Creates the directory and deletes the .tmp files of writes cut short
    by a kill (see the module docstring for why they are not reused)."""
    try:
      self.directory.mkdir()
    except OSError as e:
      raise CheckpointError(
          f'Could not create replay directory {self.directory}: '
          f'{reason(e)}', e.errno) from e
    for path in self.directory.glob('*.tmp'):
      self.delete(path.name)

  def write(self, content, record):
    """Writes a completed chunk to a new file, then calls record(name) under
    the lock; record says whether the chunk still takes the name (else it
    was evicted meanwhile and the file goes). On an OSError no file is left,
    record is not called and CheckpointError is raised."""
    name = f'{uuid.uuid4().hex}-{self.chunksize}.npz'
    temp = self.directory / (name + '.tmp')
    with self._lock:
      self._writing.add(name)
    recorded = False
    try:
      try:
        write_npz(temp, content)
        os.replace(str(temp), str(self.directory / name))
      except OSError as e:
        self.delete(temp.name)
        raise CheckpointError(
            f'Could not write replay chunk to {self.directory}: '
            f'{reason(e)}; the chunk stays in memory and the last complete '
            'checkpoint is kept', e.errno) from e
      with self._lock:
        recorded = record(name)
    finally:
      with self._lock:
        self._writing.discard(name)
    if not recorded:
      self.delete(name)

  def read(self, name, fill):
    """The arrays of the chunk file, or None with a warning when it is
    missing, unreadable or holds fewer than fill steps."""
    content = None
    try:
      with (self.directory / name).open('rb') as f:
        with np.load(f) as npz:
          content = {k: npz[k] for k in npz.files}
    except FileNotFoundError:
      warnings.warn(f'Replay chunk file {name} is missing; skipping.')
      return None
    except (ValueError, EOFError, zipfile.BadZipFile):
      pass  # Reported below, like a file with too few steps.
    if content is None or any(len(v) < fill for v in content.values()):
      # Complete files are renamed into place, so this is a disk fault.
      warnings.warn(
          f'Replay chunk file {name} is unreadable or truncated; skipping.')
      return None
    return content

  def delete(self, name):
    """Best effort: a file that cannot be deleted only costs disk space."""
    try:
      (self.directory / name).remove()
    except FileNotFoundError:
      pass
    except OSError as e:
      warnings.warn(
          f'Could not delete replay file {self.directory / name}: '
          f'{reason(e)}')

  def sync(self):
    """Makes the renames durable before a checkpoint names the files."""
    sync_dir(self.directory)

  # Which files the checkpoints name; the caller holds the lock.

  def needed(self, name):
    """Whether a checkpoint that may still be loaded names the file."""
    return name in (self._kept | self._kept_before | self._saving)

  def saving(self, names):
    """A save names these files; they stay until a newer save is done."""
    self._saving = set(names)

  def loaded(self, names):
    """The checkpoint loaded from names these files; they stay until a newer
    one is done."""
    self._kept = set(names)
    self._kept_before = set()
    self._saving = set()

  def committed(self, live):
    """Called once a checkpoint holding the last save is complete: deletes
    every chunk file that no checkpoint that may still be loaded names and
    that is not in live(), the names the buffer holds (read under the
    lock)."""
    # Listed before the names are read: a file renamed into place after
    # the listing is not considered, one renamed before is in _writing or
    # already named.
    files = [path.name for path in self.directory.glob('*.npz')]
    with self._lock:
      self._kept_before, self._kept = self._kept, self._saving
      self._saving = set()
      keep = self._kept | self._kept_before | self._writing | live()
    for name in files:
      if name not in keep:
        self.delete(name)
