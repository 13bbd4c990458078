"""Chunked sequence replay buffer.

Each worker stream writes consecutive steps into its own chunk slot of
preallocated per-key arrays [num_slots, chunksize, ...]. A new chunk starts
with a copy of the last length - 1 steps of the stream's previous chunk, so
every window of `length` consecutive stream steps lies inside exactly one
chunk and sampling is a single fancy-index gather per key.

Ids: the step at (slot, pos) has stepid slot * chunksize + pos; the item
(sequence) starting there has the same id.

Priorities: prioritize(stepid, values) gets the [B, T] step ids and per-step
signals of the steps a train step trained on (the replay context excluded).
Each row is the item it was sampled as; since the trained steps end at the
item's last step, its id is stepid[:, -1] - (length - 1). Rows of items no
longer stored are dropped. A slot can be reused by a new chunk between
sample() and prioritize(), reviving an old id for new data: the replay
remembers the slot generation of its last few sampled batches and drops rows
whose slot changed since.

Files (with a directory): a completed chunk is written to NAME.tmp, flushed
to the disk and renamed to NAME (<uuid>-<chunksize>.npz); save() refers to
written chunks by name and pickles the others. Nothing a checkpoint needs is
lost when the run is killed or the disk fails:
- A .npz file is always complete. A .tmp file is never named by a save (the
  name is recorded after the rename), and the steps of its chunk that a
  checkpoint covers are pickled in that checkpoint. So .tmp files, left by a
  kill in the middle of a write, are deleted when a replay is constructed on
  the directory rather than reused: reusing one would need the chunk's
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

import collections
import os
import threading
import time
import uuid
import warnings
import zipfile

import elements
import numpy as np

from . import samplers
from .checkpoint import CheckpointError, reason, sync_dir


def write_npz(path, arrays):
  """Writes the arrays to an .npz file and flushes it to the disk."""
  with open(str(path), 'wb') as f:
    np.savez(f, **arrays)
    f.flush()
    os.fsync(f.fileno())


class Replay:

  def __init__(
      self, length, capacity, chunksize=1024, online=False, sampler=None,
      directory=None, seed=0):
    length, chunksize = int(length), int(chunksize)
    if length < 1:
      raise ValueError(f'Sequence length must be positive, got {length}.')
    if chunksize <= length:
      raise ValueError(
          f'Replay chunksize ({chunksize}) must be larger than the sequence '
          f'length ({length}).')
    self.length = length
    self.capacity = int(capacity)
    self.chunksize = chunksize
    self.online = online
    self.num_slots = max(2, -(-self.capacity // chunksize))
    self.sampler = samplers.Uniform(seed) if sampler is None else sampler
    self.directory = directory and elements.Path(directory)
    if self.directory:
      try:
        self.directory.mkdir()
      except OSError as e:
        raise CheckpointError(
            f'Could not create replay directory {self.directory}: '
            f'{reason(e)}', e.errno) from e
      self._remove_partial_writes()
    self._lock = threading.Lock()
    self._writing = set()  # chunk files being written now
    # Chunk files the two newest checkpoints may name: the run keeps two, so
    # that a damaged newest one can fall back to the one before.
    self._kept = set()
    self._kept_before = set()
    self._saving = set()   # chunk files the last save() named
    self._reset()

  def _reset_timing(self):
    self._sample_time = 0.0
    self._sample_batches = 0
    self._age_sum = 0.0
    self._age_count = 0

  def _reset(self):
    n = self.num_slots
    self._data = {}  # key -> array [allocated slots, chunksize, *shape]
    self._alloc = min(n, 4)  # Slots allocated so far; grows by doubling.
    self._fill = np.zeros(n, np.int64)      # steps written into the slot
    self._used = np.zeros(n, bool)          # slot holds a live chunk
    self._current = np.zeros(n, bool)       # a stream is writing into it
    self._created = np.zeros(n, np.int64)   # creation order, for FIFO
    self._gen = np.zeros(n, np.int64)       # bumped on every reuse
    self._dup = np.zeros(n, np.int64)       # leading steps also in prev chunk
    self._prev = np.full(n, -1, np.int64)   # stream's previous chunk slot
    self._names = [None] * n                # chunk file, once written
    # Insert count at which each step was added, for the age of samples.
    self._stamp = np.zeros((self._alloc, self.chunksize), np.int64)
    self._recent = collections.deque(maxlen=8)  # (itemids, slot gens)
    self._reset_timing()
    self._streams = {}  # worker -> {'slot': int, 'count': steps ever added}
    self._queue = collections.deque()  # online item ids, oldest first
    self._chunks = 0
    self._inserts = 0
    self._samples = 0
    self._evictions = 0

  def __len__(self):
    with self._lock:
      return self._size()

  def _size(self):
    # Copied prefixes count once, while the chunk they came from is alive.
    return int((self._fill - self._dup)[self._used].sum())

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
    step = {k: v for k, v in step.items() if not k.startswith('log/')}
    if 'stepid' in step:
      raise ValueError("'stepid' is reserved for replay storage ids.")
    stream = self._streams.get(worker)
    if stream is None:
      stream = self._streams[worker] = {'slot': self._open_chunk(-1),
                                        'count': 0}
    elif self._fill[stream['slot']] == self.chunksize:
      stream['slot'] = self._open_chunk(stream['slot'])
    slot = stream['slot']
    pos = self._fill[slot]
    for key, value in step.items():
      value = np.asarray(value)
      if key not in self._data:
        self._allocate(key, value.dtype, value.shape)
      self._data[key][slot, pos] = value
    self._stamp[slot, pos] = self._inserts
    self._fill[slot] = pos + 1
    stream['count'] += 1
    self._inserts += 1
    if pos + 1 >= self.length:
      itemid = slot * self.chunksize + pos + 1 - self.length
      self.sampler.insert(np.array([itemid], np.int64))
      # Non-overlapping windows of the stream, so each step is trained on.
      if self.online and (stream['count'] - self.length) % self.length == 0:
        self._queue.append(itemid)
    if pos + 1 == self.chunksize and self.directory:
      content = {k: v[slot].copy() for k, v in self._data.items()}
      return slot, self._gen[slot], content
    return None

  def _allocate(self, key, dtype, shape):
    self._data[key] = np.zeros((self._alloc, self.chunksize, *shape), dtype)

  def _grow(self, slots):
    """Make room for at least `slots` slots. Storage grows by doubling up to
    the capacity, so memory follows the data actually stored (the OS refuses
    to reserve e.g. 57 GiB of image slots up front)."""
    if slots <= self._alloc:
      return
    new = min(self.num_slots, max(slots, 2 * self._alloc))

    def grown(old):
      arr = np.zeros((new, *old.shape[1:]), old.dtype)
      arr[:self._alloc] = old
      return arr
    self._data = {key: grown(old) for key, old in self._data.items()}
    self._stamp = grown(self._stamp)
    self._alloc = new

  def _open_chunk(self, prev):
    """Takes a slot for a new chunk of the stream, continuing from prev."""
    free = np.flatnonzero(~self._used)
    if len(free):
      slot = int(free[0])
    else:
      candidates = np.flatnonzero(~self._current)
      if not len(candidates):
        raise RuntimeError(
            f'Replay has no chunk slot to evict: worker streams are writing '
            f'into all {self.num_slots} slots. Increase the capacity to more '
            f'than (workers + 1) * chunksize.')
      slot = int(candidates[np.argmin(self._created[candidates])])
      self._evict(slot)
      for value in self._data.values():
        value[slot] = 0
    self._grow(slot + 1)
    keep = self.length - 1
    if prev >= 0:
      for value in (*self._data.values(), self._stamp):
        value[slot, :keep] = value[prev, self.chunksize - keep:]
      self._current[prev] = False
    self._fill[slot] = keep if prev >= 0 else 0
    self._dup[slot] = keep if prev >= 0 else 0
    self._prev[slot] = prev
    self._used[slot] = True
    self._current[slot] = True
    self._created[slot] = self._chunks
    self._gen[slot] += 1
    self._names[slot] = None
    self._chunks += 1
    return slot

  def _evict(self, slot):
    self._unlink(slot, self._fill[slot])
    name = self._names[slot]
    if name and name not in (self._kept | self._kept_before | self._saving):
      self._delete_file(name)  # Else committed() deletes it when unneeded.
    self._used[slot] = False
    self._fill[slot] = 0
    self._dup[slot] = 0
    self._prev[slot] = -1
    self._names[slot] = None
    self._evictions += 1

  def _unlink(self, slot, fill):
    """Removes the chunk's items from the sampler and online queue."""
    self.sampler.remove(self._slot_items(slot, fill))
    if self._queue:
      self._queue = collections.deque(
          i for i in self._queue if i // self.chunksize != slot)
    # The successor's copied prefix is now the only copy of those steps.
    successors = self._prev == slot
    self._dup[successors] = 0
    self._prev[successors] = -1

  def _slot_items(self, slot, fill=None):
    fill = self._fill[slot] if fill is None else fill
    count = max(0, int(fill) - self.length + 1)
    return slot * self.chunksize + np.arange(count, dtype=np.int64)

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
    slot, pos = np.divmod(itemids, self.chunksize)
    index = pos[:, None] + np.arange(self.length)
    batch = {k: v[slot[:, None], index] for k, v in self._data.items()}
    batch['stepid'] = slot[:, None] * self.chunksize + index
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
      slots = np.flatnonzero(self._used)
      if not len(slots):
        return np.zeros(0, np.int64)
      return np.concatenate([self._slot_items(s) for s in slots])

  def gather(self, itemids):
    """The batch of the given items, as sample() returns it, without
    counting as a sample (for recomputing priorities buffer-wide). Ids no
    longer stored give unspecified data; prioritize() drops them."""
    itemids = np.asarray(itemids, np.int64).reshape(-1)
    with self._lock:
      return self._gather(itemids)

  def update(self, stepid, values):
    stepid = np.asarray(stepid, np.int64)
    flat = stepid.reshape(-1)
    with self._lock:
      # Drop writes to steps not stored (anymore), so a late update cannot
      # leave values ahead of a reused chunk's write position.
      slot, pos = np.divmod(flat, self.chunksize)
      valid = self._used[slot] & (pos < self._fill[slot])
      for key, value in values.items():
        value = np.asarray(value)
        if value.shape[:stepid.ndim] != stepid.shape:
          raise ValueError(
              f"Update '{key}' has shape {value.shape}, expected leading "
              f'dims {stepid.shape} matching stepid.')
        shape = value.shape[stepid.ndim:]
        if key not in self._data:
          self._allocate(key, value.dtype, shape)
        target = self._data[key]
        value = value.reshape(-1, *shape)
        target.reshape(-1, *shape)[flat[valid]] = value[valid]

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
      slot, pos = np.divmod(itemids, self.chunksize)
      valid = (itemids >= 0) & (slot < self.num_slots)
      slot, pos = np.where(valid, slot, 0), np.where(valid, pos, 0)
      valid &= self._used[slot] & (pos + self.length <= self._fill[slot])
      for ids, gens in reversed(self._recent):
        if np.array_equal(ids, itemids):
          valid &= gens == self._gen[slot]
          break
      if valid.any():
        self.sampler.prioritize(itemids[valid], values[valid])

  # Persistence.

  def _write_chunk(self, slot, gen, content):
    """Writes a completed chunk outside the lock, then records its name. On
    an OSError no file is left, the chunk keeps no name (so the next save
    pickles it) and CheckpointError is raised."""
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
        self._delete_file(temp.name)
        raise CheckpointError(
            f'Could not write replay chunk to {self.directory}: '
            f'{reason(e)}; the chunk stays in memory and the last complete '
            'checkpoint is kept', e.errno) from e
      with self._lock:
        if self._gen[slot] == gen and self._used[slot]:
          self._names[slot] = name
          recorded = True
    finally:
      with self._lock:
        self._writing.discard(name)
    if not recorded:
      # Evicted while writing; the file is not part of the buffer.
      self._delete_file(name)

  def _delete_file(self, name):
    """Best effort: a file that cannot be deleted only costs disk space."""
    try:
      (self.directory / name).remove()
    except FileNotFoundError:
      pass
    except OSError as e:
      warnings.warn(
          f'Could not delete replay file {self.directory / name}: '
          f'{reason(e)}')

  def _remove_partial_writes(self):
    """Deletes the .tmp files of writes cut short by a kill (see the module
    docstring for why they are not reused)."""
    for path in self.directory.glob('*.tmp'):
      self._delete_file(path.name)

  def committed(self):
    """Called (by Checkpoint) once a checkpoint holding the last save() is
    complete: deletes the chunk files that neither it nor the live buffer
    refers to."""
    if not self.directory:
      return
    # Listed before the names are read: a file renamed into place after
    # the listing is not considered, one renamed before is in _writing or
    # already named.
    files = [path.name for path in self.directory.glob('*.npz')]
    with self._lock:
      self._kept_before, self._kept = self._kept, self._saving
      self._saving = set()
      keep = (self._kept | self._kept_before | self._writing |
              {n for n in self._names if n})
    for name in files:
      if name not in keep:
        self._delete_file(name)

  def save(self):
    with self._lock:
      slots = {}
      for slot in np.flatnonzero(self._used):
        slot = int(slot)
        fill = int(self._fill[slot])
        info = {
            'fill': fill, 'current': bool(self._current[slot]),
            'created': int(self._created[slot]), 'dup': int(self._dup[slot]),
            'prev': int(self._prev[slot]), 'name': self._names[slot]}
        if not info['name']:
          info['data'] = {k: v[slot, :fill].copy()
                          for k, v in self._data.items()}
        info['stamp'] = self._stamp[slot, :fill].copy()
        slots[slot] = info
      self._saving = {i['name'] for i in slots.values() if i['name']}
      data = {
          'version': 1,
          'length': self.length,
          'chunksize': self.chunksize,
          'specs': {k: (v.dtype.str, v.shape[2:])
                    for k, v in self._data.items()},
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
      sync_dir(self.directory)
    return data

  def load(self, data):
    with self._lock:
      self._load(data)
      # Files of the checkpoint loaded from stay until a newer one is done.
      self._kept = {i['name'] for i in data['slots'].values() if i['name']}
      self._kept_before = set()
      self._saving = set()
      # Completed chunks without a file (pickled in the checkpoint, or whose
      # write was in flight at save time) get one, keeping later saves small.
      pending = []
      for slot in np.flatnonzero(self._used) if self.directory else []:
        if self._fill[slot] == self.chunksize and not self._names[slot]:
          content = {k: v[slot].copy() for k, v in self._data.items()}
          pending.append((slot, self._gen[slot], content))
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
    if data['slots']:
      self._alloc = max(self._alloc, max(data['slots']) + 1)
      self._stamp = np.zeros((self._alloc, self.chunksize), np.int64)
    for key, (dtype, shape) in data['specs'].items():
      self._allocate(key, np.dtype(dtype), tuple(shape))
    missing = []
    for slot, info in data['slots'].items():
      content = self._load_content(info)
      if content is None:
        missing.append(slot)
        continue
      for key, value in content.items():
        if key not in self._data:
          self._allocate(key, value.dtype, value.shape[1:])
        self._data[key][slot, :info['fill']] = value[:info['fill']]
      self._used[slot] = True
      self._current[slot] = info['current']
      self._fill[slot] = info['fill']
      self._created[slot] = info['created']
      self._dup[slot] = info['dup']
      self._prev[slot] = info['prev']
      self._names[slot] = info['name']
      self._gen[slot] = 1
      if 'stamp' in info:
        self._stamp[slot, :info['fill']] = info['stamp']
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
    expected = sum(len(self._slot_items(s))
                   for s in np.flatnonzero(self._used))
    if len(self.sampler) != expected:
      warnings.warn(
          f'Replay sampler holds {len(self.sampler)} items after loading, '
          f'the chunks hold {expected}.')

  def _load_content(self, info):
    if not info['name']:
      return info['data']
    if not self.directory:
      raise ValueError(
          'Replay checkpoint refers to chunk files but this replay has no '
          'directory.')
    content = None
    try:
      with (self.directory / info['name']).open('rb') as f:
        with np.load(f) as npz:
          content = {k: npz[k] for k in npz.files}
    except FileNotFoundError:
      warnings.warn(f"Replay chunk file {info['name']} is missing; skipping.")
      return None
    except (ValueError, EOFError, zipfile.BadZipFile):
      pass  # Reported below, like a file with too few steps.
    if content is None or any(
        len(v) < info['fill'] for v in content.values()):
      # Complete files are renamed into place, so this is a disk fault.
      warnings.warn(
          f"Replay chunk file {info['name']} is unreadable or truncated; "
          'skipping.')
      return None
    return content

  def _forget(self, slot, fill):
    """Drops every reference to a chunk whose file could not be loaded."""
    self._unlink(slot, fill)
    for worker, stream in list(self._streams.items()):
      if stream['slot'] == slot:
        del self._streams[worker]  # Restarts with a fresh chunk.


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
