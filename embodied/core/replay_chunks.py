"""Chunked step storage of the replay buffer.

Each worker stream writes consecutive steps into its own chunk slot of
preallocated per-key arrays [num_slots, chunksize, ...]. A new chunk starts
with a copy of the last length - 1 steps of the stream's previous chunk, so
every window of `length` consecutive stream steps lies inside exactly one
chunk and reading a batch is a single fancy-index gather per key.

Ids: the step at (slot, pos) has stepid slot * chunksize + pos; the item
(sequence) starting there has the same id. A chunk with fill steps holds
the items of its first fill - length + 1 positions.

Eviction: once every slot is in use, a new chunk takes the slot of the
oldest chunk that no stream is writing into. A slot's generation is bumped
each time it is taken, so the holder of an id can tell the data changed.

Chunks knows nothing of samplers or files. It tells its subclass when a
chunk's items stop being stored (_remove_items) and when an evicted chunk
gives up its name (_release_file); a chunk's name is whatever the subclass
recorded for it (_name_chunk), None until then. Every write to storage goes
through _allocate, _grow, _open_chunk and _append, so a subclass can follow
them (embodied/jax/replay.py mirrors storage on the device). Not locked: the
owner holds its lock around every call.
"""

import numpy as np


class Chunks:

  def __init__(self, length, capacity, chunksize):
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
    self.num_slots = max(2, -(-self.capacity // chunksize))
    self._reset()

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
    self._streams = {}  # worker -> {'slot': int, 'count': steps ever added}
    self._chunks = 0
    self._inserts = 0
    self._evictions = 0

  # Hooks for the subclass.

  def _remove_items(self, slot, itemids):
    """The items of the chunk in slot are no longer stored."""

  def _release_file(self, name):
    """An evicted chunk gives up its name (None if it had none)."""

  # Contents.

  def _size(self):
    # Copied prefixes count once, while the chunk they came from is alive.
    return int((self._fill - self._dup)[self._used].sum())

  def _slot_items(self, slot, fill=None):
    fill = self._fill[slot] if fill is None else fill
    count = max(0, int(fill) - self.length + 1)
    return slot * self.chunksize + np.arange(count, dtype=np.int64)

  def _item_ids(self):
    """Ids of every item stored now, in id order."""
    slots = np.flatnonzero(self._used)
    if not len(slots):
      return np.zeros(0, np.int64)
    return np.concatenate([self._slot_items(s) for s in slots])

  def _stored_items(self, itemids):
    """Whether each item is stored now, and its slot (0 where the id lies
    outside the buffer)."""
    slot, pos = np.divmod(itemids, self.chunksize)
    valid = (itemids >= 0) & (slot < self.num_slots)
    slot, pos = np.where(valid, slot, 0), np.where(valid, pos, 0)
    valid &= self._used[slot] & (pos + self.length <= self._fill[slot])
    return valid, slot

  def _chunk_content(self, slot):
    """A copy of every key's steps of the slot, for writing its file."""
    return {k: v[slot].copy() for k, v in self._data.items()}

  def _name_chunk(self, slot, gen, name):
    """Records the chunk's name if the slot still holds the chunk of
    generation gen; returns whether it did."""
    if self._gen[slot] == gen and self._used[slot]:
      self._names[slot] = name
      return True
    return False

  # Writing.

  def _append(self, step, worker):
    """Writes the step after the worker stream's last one; returns its
    (slot, pos)."""
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
    return slot, pos

  def _write_back(self, stepid, values):
    """Writes values [*stepid.shape, ...] per key at the given steps."""
    flat = stepid.reshape(-1)
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
    self._release_file(self._names[slot])
    self._used[slot] = False
    self._fill[slot] = 0
    self._dup[slot] = 0
    self._prev[slot] = -1
    self._names[slot] = None
    self._evictions += 1

  def _unlink(self, slot, fill):
    """Removes the chunk's items from the buffer."""
    self._remove_items(slot, self._slot_items(slot, fill))
    # The successor's copied prefix is now the only copy of those steps.
    successors = self._prev == slot
    self._dup[successors] = 0
    self._prev[successors] = -1

  # Reading.

  def _read(self, itemids):
    """The windows of the items, per key [B, length, ...], and their step
    ids as 'stepid'."""
    slot, pos = np.divmod(itemids, self.chunksize)
    index = pos[:, None] + np.arange(self.length)
    batch = {k: v[slot[:, None], index] for k, v in self._data.items()}
    batch['stepid'] = slot[:, None] * self.chunksize + index
    return batch

  # Saved state. Each live slot is a dict: its bookkeeping, the insert
  # stamps of its steps and, for a chunk without a name, its steps.

  def _specs(self):
    return {k: (v.dtype.str, v.shape[2:]) for k, v in self._data.items()}

  def _save_slots(self):
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
    return slots

  def _load_slots(self, specs, slots, read):
    """Fills the emptied storage with saved slots. read(info) gives a
    slot's steps per key, or None where they are lost; returns the slots
    lost, which the caller forgets (_forget) once the rest is restored."""
    if slots:
      self._alloc = max(self._alloc, max(slots) + 1)
      self._stamp = np.zeros((self._alloc, self.chunksize), np.int64)
    for key, (dtype, shape) in specs.items():
      self._allocate(key, np.dtype(dtype), tuple(shape))
    missing = []
    for slot, info in slots.items():
      content = read(info)
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
    return missing

  def _forget(self, slot, fill):
    """Drops every reference to a saved chunk whose steps are lost."""
    self._unlink(slot, fill)
    for worker, stream in list(self._streams.items()):
      if stream['slot'] == slot:
        del self._streams[worker]  # Restarts with a fresh chunk.
