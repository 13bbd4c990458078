"""Item samplers for the replay buffer.

A sampler only knows integer item ids; the replay decides what an id means.
Replay calls every method under its own lock, so samplers need no locking.
"""

import numpy as np


class Sampler:
  """Interface: a set of item ids that can be sampled from."""

  def insert(self, itemids):
    raise NotImplementedError

  def remove(self, itemids):
    raise NotImplementedError

  def sample(self, n):
    raise NotImplementedError

  def prioritize(self, itemids, priorities):
    """Hook for prioritized replay; uniform samplers ignore it."""

  def __len__(self):
    raise NotImplementedError

  def save(self):
    raise NotImplementedError

  def load(self, data):
    raise NotImplementedError


class Uniform(Sampler):
  """Uniform sampling over a dense key array with an id -> index map.

  Removal swaps the last keys into the holes, so insert, remove and sample
  are O(1) per id and vectorised over the ids passed in.
  """

  def __init__(self, seed=0):
    self._rng = np.random.default_rng(seed)
    self._keys = np.zeros(0, np.int64)   # keys[:size] are the live ids
    self._index = np.zeros(0, np.int64)  # id -> position in keys, or -1
    self._size = 0

  def __len__(self):
    return self._size

  def insert(self, itemids):
    ids = np.asarray(itemids, np.int64).reshape(-1)
    if not len(ids):
      return
    if ids.min() < 0:
      raise ValueError('Item ids must be non-negative.')
    self._reserve(self._size + len(ids), int(ids.max()) + 1)
    if (self._index[ids] >= 0).any():
      raise KeyError('Inserting item ids that are already present.')
    start, end = self._size, self._size + len(ids)
    where = np.arange(start, end)
    self._index[ids] = where
    if len(ids) > 1 and (self._index[ids] != where).any():
      self._index[ids] = -1  # Repeated ids: the later write won.
      raise KeyError('Inserting repeated item ids.')
    self._keys[start:end] = ids
    self._size = end

  def remove(self, itemids):
    ids = np.asarray(itemids, np.int64).reshape(-1)
    if not len(ids):
      return
    if ids.min() < 0 or ids.max() >= len(self._index):
      raise KeyError('Removing item ids that are not present.')
    where = self._index[ids]
    if (where < 0).any() or len(np.unique(ids)) < len(ids):
      raise KeyError('Removing item ids that are not present.')
    newsize = self._size - len(ids)
    # Keys in the tail that survive fill the holes left below the new size.
    self._index[ids] = -1
    tail = self._keys[newsize:self._size]
    movers = tail[self._index[tail] >= 0]
    holes = where[where < newsize]
    assert len(movers) == len(holes), (len(movers), len(holes))
    self._keys[holes] = movers
    self._index[movers] = holes
    self._size = newsize

  def sample(self, n):
    if not self._size:
      raise ValueError('Cannot sample from an empty sampler: add data first.')
    return self._keys[self._rng.integers(0, self._size, int(n))]

  def save(self):
    return {'keys': self._keys[:self._size].copy(),
            'rng': self._rng.bit_generator.state}

  def load(self, data):
    keys = np.asarray(data['keys'], np.int64)
    self._keys = np.zeros(0, np.int64)
    self._index = np.zeros(0, np.int64)
    self._size = 0
    self.insert(keys)
    self._rng.bit_generator.state = data['rng']

  def _reserve(self, size, maxid):
    # Grow geometrically so repeated single inserts stay amortised O(1).
    if size > len(self._keys):
      keys = np.zeros(max(size, 2 * len(self._keys), 64), np.int64)
      keys[:self._size] = self._keys[:self._size]
      self._keys = keys
    if maxid > len(self._index):
      index = np.full(max(maxid, 2 * len(self._index), 64), -1, np.int64)
      index[:len(self._index)] = self._index
      self._index = index
