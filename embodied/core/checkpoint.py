"""Checkpoints in the logdir that survive being killed at any moment.

Each save goes to a new folder (elements writes the objects, then a `done`
marker); only then is `latest` replaced by an atomic rename, and only then
are older folders removed. Loading ignores folders without `done`, so a
checkpoint is never read half-written.
"""

import os

import elements
from elements import checkpoint as ckpt


class Checkpoint:

  def __init__(self, directory, keep=1):
    self._directory = elements.Path(directory)
    self._keep = keep
    self._objects = {}

  def register(self, name, obj):
    if not (callable(getattr(obj, 'save', None)) and
            callable(getattr(obj, 'load', None))):
      raise ValueError(f"Checkpointed object '{name}' needs save() and load()")
    self._objects[name] = obj

  def latest(self):
    """Newest complete checkpoint folder, or None."""
    pointer = self._directory / 'latest'
    if pointer.exists():
      folder = self._directory / pointer.read_text().strip()
      if ckpt.exists(folder):
        return folder
    # Pointer missing or stale: fall back to the newest complete folder.
    if not self._directory.exists():
      return None
    folders = sorted(
        f for f in self._directory.glob('*')
        if f.name != 'latest' and ckpt.exists(f))
    return folders[-1] if folders else None

  def save(self, step):
    name = f'{elements.timestamp(millis=True)}-{int(step):012d}'
    folder = self._directory / name
    self._directory.mkdir()
    ckpt.save(folder, {k: v.save for k, v in self._objects.items()})
    tmp = self._directory / 'latest.tmp'
    tmp.write_text(name)
    os.replace(str(tmp), str(self._directory / 'latest'))
    self._cleanup(keep=folder)
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

  def _cleanup(self, keep):
    folders = sorted(
        f for f in self._directory.glob('*')
        if f.name not in ('latest', 'latest.tmp') and f.is_dir())
    complete = [f for f in folders if ckpt.exists(f)]
    old = complete[:-self._keep] if self._keep else []
    # Incomplete folders are leftovers of a killed save.
    old += [f for f in folders if not ckpt.exists(f) and f != keep]
    for folder in old:
      if folder != keep:
        folder.remove(recursive=True)
