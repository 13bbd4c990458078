"""Chunked sequence replay buffer.

Replay puts together the chunked step storage (replay_chunks.py: slots,
streams, eviction, step and item ids), an item sampler (samplers.py) and,
with a directory, the chunk files its checkpoints refer to (replay_files.py:
crash-safe writes and when a file may be deleted). Every public method takes
the replay's lock, so workers may add while the learner samples.

Items: an item (sequence of `length` steps) becomes sampleable when its last
step is added and stops being sampleable when its chunk is evicted. With
online=True, non-overlapping windows of each stream are also queued and
every committed sample() takes from that queue first, so each step is
trained on.

Priorities: prioritize(stepid, values) gets the [B, T] step ids and per-step
signals of the steps a train step trained on (the replay context excluded).
Each row is the item it was sampled as; since the trained steps end at the
item's last step, its id is stepid[:, -1] - (length - 1). Rows of items no
longer stored are dropped. A slot can be reused by a new chunk between
sample() and prioritize(), reviving an old id for new data: the replay
remembers the slot generation of its last few sampled batches and drops rows
whose slot changed since.

Checkpoints: save() gives a picklable dict (version 1) with the slots'
bookkeeping, the chunks without a file pickled, the streams, the online
queue, the counters and the sampler state; load() takes one back.
"""

import collections
import functools
import threading
import time
import warnings

import elements
import numpy as np

from . import samplers
from .replay_chunks import Chunks
from .replay_files import ChunkFiles


class Replay(Chunks):
  # Storage is the base class rather than a member so that a subclass
  # following storage writes by overriding _allocate, _grow or _open_chunk
  # (embodied/jax/replay.py) sees every call of them.

  def __init__(
      self, length, capacity, chunksize=1024, online=False, sampler=None,
      directory=None, seed=0):
    super().__init__(length, capacity, chunksize)
    self.online = online
    self.sampler = samplers.Uniform(seed) if sampler is None else sampler
    self._lock = threading.Lock()
    self._files = ChunkFiles(
        directory and elements.Path(directory), self.chunksize, self._lock)
    if self.directory:
      self._files.open()

  @property
  def directory(self):
    """Where chunk files go; falsy for none. Setting it later reads the
    chunk files there on load() and creates or deletes nothing until then
    (scripts/dream.py views a run's replay this way)."""
    return self._files.directory

  @directory.setter
  def directory(self, directory):
    self._files.directory = directory

  def _reset_timing(self):
    self._sample_time = 0.0
    self._sample_batches = 0
    self._age_sum = 0.0
    self._age_count = 0

  def _reset(self):
    super()._reset()
    self._recent = collections.deque(maxlen=8)  # (itemids, slot gens)
    self._reset_timing()
    self._queue = collections.deque()  # online item ids, oldest first
    self._samples = 0

  def __len__(self):
    with self._lock:
      return self._size()

  def stats(self):
    """Counters, the sampler's metrics, and since the last call: sampler
    seconds per batch and the mean age (steps inserted since the item's last
    step) of sampled items."""
    with self._lock:
      out = {
          'replay/size': self._size(),
          'replay/items': len(self.sampler),
          'replay/chunks': int(self._used.sum()),
          'replay/inserts': self._inserts,
          'replay/samples': self._samples,
          'replay/evictions': self._evictions,
          'replay/online_queue': len(self._queue),
      }
      if self._sample_batches:
        out['replay/sample_ms'] = (
            1000 * self._sample_time / self._sample_batches)
      if self._age_count:
        out['replay/sample_age'] = self._age_sum / self._age_count
      self._reset_timing()
      out.update({f'replay/{k}': v for k, v in self.sampler.stats().items()})
      return out

  # Writing.

  def add(self, step, worker=0):
    with self._lock:
      pending = self._add(step, worker)
    if pending:
      self._write_chunk(*pending)

  def _add(self, step, worker):
    """Stores the step; returns (slot, gen, content) of a chunk it completed
    that needs a file, else None."""
    step = {k: v for k, v in step.items() if not k.startswith('log/')}
    if 'stepid' in step:
      raise ValueError("'stepid' is reserved for replay storage ids.")
    slot, pos = self._append(step, worker)
    if pos + 1 >= self.length:
      itemid = slot * self.chunksize + pos + 1 - self.length
      self.sampler.insert(np.array([itemid], np.int64))
      # Non-overlapping windows of the stream, so each step is trained on.
      count = self._streams[worker]['count']
      if self.online and (count - self.length) % self.length == 0:
        self._queue.append(itemid)
    if pos + 1 == self.chunksize and self.directory:
      return slot, self._gen[slot], self._chunk_content(slot)
    return None

  def _remove_items(self, slot, itemids):
    self.sampler.remove(itemids)
    if self._queue:
      self._queue = collections.deque(
          i for i in self._queue if i // self.chunksize != slot)

  def _release_file(self, name):
    if name and not self._files.needed(name):
      self._files.delete(name)  # Else committed() deletes it when unneeded.

  def _write_chunk(self, slot, gen, content):
    """Writes a completed chunk outside the lock, then names it. On an
    OSError the chunk keeps no name (so the next save pickles it) and
    CheckpointError is raised."""
    self._files.write(content, functools.partial(self._name_chunk, slot, gen))

  # Reading.

  def sample(self, batch_size, commit=True):
    """commit=False (report batches, not trained on) leaves the online queue
    and the sampler state alone and is not counted in the stats."""
    batch_size = int(batch_size)
    with self._lock:
      online = []
      while commit and self._queue and len(online) < batch_size:
        online.append(self._queue.popleft())
      itemids = np.array(online, np.int64)
      if len(online) < batch_size:
        if not len(self.sampler):
          raise ValueError(
              f'Replay has no complete sequence of length {self.length} to '
              f'sample yet; add more steps first.')
        start = time.perf_counter()
        rest = self.sampler.sample(batch_size - len(online), commit)
        itemids = np.concatenate([itemids, np.asarray(rest, np.int64)])
        if commit:
          self._sample_time += time.perf_counter() - start
          self._sample_batches += 1
      batch = self._gather(itemids)
      if commit:
        self._samples += batch_size
        slot, pos = np.divmod(itemids, self.chunksize)
        ages = self._inserts - 1 - self._stamp[slot, pos + self.length - 1]
        self._age_sum += float(ages.sum())
        self._age_count += len(ages)
    return batch

  def _gather(self, itemids):
    batch = self._read(itemids)
    slot = itemids // self.chunksize
    self._recent.append((itemids.copy(), self._gen[slot]))
    return batch

  @staticmethod
  def stack(batches):
    """The batches of several replays of this kind on a new leading axis
    (the members of a multi-seed run)."""
    return {k: np.stack([b[k] for b in batches]) for k in batches[0]}

  def item_ids(self):
    """Ids of every item stored now, in id order."""
    with self._lock:
      return self._item_ids()

  def gather(self, itemids):
    """The batch of the given items, as sample() returns it, without
    counting as a sample (for recomputing priorities buffer-wide). Ids no
    longer stored give unspecified data; prioritize() drops them."""
    itemids = np.asarray(itemids, np.int64).reshape(-1)
    with self._lock:
      return self._gather(itemids)

  def update(self, stepid, values):
    """Writes values [*stepid.shape, ...] per key (e.g. a train step's
    latents) at the given steps; steps no longer stored are skipped."""
    stepid = np.asarray(stepid, np.int64)
    with self._lock:
      self._write_back(stepid, values)

  def prioritize(self, stepid, values):
    """stepid, values [B, T]: per-step priority signals of the trained steps
    of each sampled row (see the module docstring for the mapping)."""
    stepid = np.asarray(stepid, np.int64)
    values = np.asarray(values)
    if stepid.ndim != 2 or values.shape != stepid.shape:
      raise ValueError(
          f'prioritize() needs stepid and values of one shape [B, T], got '
          f'{stepid.shape} and {values.shape}.')
    itemids = stepid[:, -1] - (self.length - 1)
    with self._lock:
      valid, slot = self._stored_items(itemids)
      for ids, gens in reversed(self._recent):
        if np.array_equal(ids, itemids):
          valid &= gens == self._gen[slot]
          break
      if valid.any():
        self.sampler.prioritize(itemids[valid], values[valid])

  # Checkpoints.

  def committed(self):
    """Called (by Checkpoint) once a checkpoint holding the last save() is
    complete: deletes the chunk files that neither it nor the live buffer
    refers to."""
    if not self.directory:
      return
    self._files.committed(lambda: {n for n in self._names if n})

  def save(self):
    with self._lock:
      slots = self._save_slots()
      self._files.saving(i['name'] for i in slots.values() if i['name'])
      data = {
          'version': 1,
          'length': self.length,
          'chunksize': self.chunksize,
          'specs': self._specs(),
          'slots': slots,
          'streams': {w: dict(s) for w, s in self._streams.items()},
          'queue': list(self._queue),
          'counters': {
              'chunks': self._chunks, 'inserts': self._inserts,
              'samples': self._samples, 'evictions': self._evictions},
          'sampler': self.sampler.save(),
      }
    if self.directory:
      # The checkpoint holding this save refers to these files by name.
      self._files.sync()
    return data

  def load(self, data):
    with self._lock:
      self._load(data)
      self._files.loaded(
          i['name'] for i in data['slots'].values() if i['name'])
      # Completed chunks without a file (pickled in the checkpoint, or whose
      # write was in flight at save time) get one, keeping later saves small.
      pending = []
      for slot in np.flatnonzero(self._used) if self.directory else []:
        if self._fill[slot] == self.chunksize and not self._names[slot]:
          pending.append(
              (slot, self._gen[slot], self._chunk_content(slot)))
    for args in pending:
      self._write_chunk(*args)

  def _load(self, data):
    """Replaces the buffer contents; the caller holds the lock."""
    if (data['length'], data['chunksize']) != (self.length, self.chunksize):
      raise ValueError(
          f"Replay checkpoint has length {data['length']} and chunksize "
          f"{data['chunksize']}, this replay {self.length} and "
          f'{self.chunksize}.')
    if data['slots'] and max(data['slots']) >= self.num_slots:
      raise ValueError(
          f'Replay checkpoint uses more chunk slots than capacity '
          f'{self.capacity} allows.')
    self._reset()
    missing = self._load_slots(data['specs'], data['slots'], self._read_chunk)
    self._streams = {w: dict(s) for w, s in data['streams'].items()}
    self._queue = collections.deque(data['queue'])
    counters = data['counters']
    self._chunks = counters['chunks']
    self._inserts = counters['inserts']
    self._samples = counters['samples']
    self._evictions = counters['evictions']
    self.sampler.load(data['sampler'])
    for slot in missing:
      self._forget(slot, data['slots'][slot]['fill'])
    expected = len(self._item_ids())
    if len(self.sampler) != expected:
      warnings.warn(
          f'Replay sampler holds {len(self.sampler)} items after loading, '
          f'the chunks hold {expected}.')

  def _read_chunk(self, info):
    """A saved slot's steps: pickled in the save or read from its file."""
    if not info['name']:
      return info['data']
    if not self.directory:
      raise ValueError(
          'Replay checkpoint refers to chunk files but this replay has no '
          'directory.')
    return self._files.read(info['name'], info['fill'])


class Stacked:
  """The replays of the members of a multi-seed run (run.seeds) behind the
  sampling side of one replay: a batch stacks the members' batches (each
  sampled from its own replay, sampler and priorities) on a leading axis,
  and write-backs and priorities are split along it again."""

  def __init__(self, replays):
    self.replays = list(replays)

  def __len__(self):
    return min(len(r) for r in self.replays)

  def sample(self, batch_size, commit=True):
    return self.replays[0].stack(
        [r.sample(batch_size, commit) for r in self.replays])

  def update(self, stepid, values):
    for k, replay in enumerate(self.replays):
      replay.update(stepid[k], {n: v[k] for n, v in values.items()})

  def prioritize(self, stepid, values):
    for k, replay in enumerate(self.replays):
      replay.prioritize(stepid[k], values[k])
