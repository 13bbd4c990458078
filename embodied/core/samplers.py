"""Item samplers for the replay buffer.

A sampler only knows integer item ids; the replay decides what an id means.
Replay calls every method under its own lock, so samplers need no locking.

  Uniform      every item equally likely
  Prioritized  proportional to priority ** exponent, on a sum-tree
  Recency      p(item) ∝ (age + 1) ** -recexp, age = items inserted after it
  Mixture      a fixed number of each batch from each of the above

The registry SAMPLERS maps each `replay.fracs` key to its class; a class
builds itself from the `replay` config (from_config) and raises ValueError
naming the key on a bad option. make() builds the sampler a config asks
for. Adding a sampler: its class here, its registry entry, its fracs key
and options in configs.yaml.
"""

import numpy as np

from .sumtree import SumTree


def _new_ids(itemids):
  """Ids to insert, as a flat int64 array; negative ids are an error."""
  ids = np.asarray(itemids, np.int64).reshape(-1)
  if len(ids) and ids.min() < 0:
    raise ValueError('Item ids must be non-negative.')
  return ids


def _check_new(ids, present):
  """present(ids) -> bool per id; inserted ids must be absent and distinct."""
  if present(ids).any() or len(np.unique(ids)) < len(ids):
    raise KeyError('Inserting item ids that are already present.')


def _old_ids(itemids, limit, present):
  """Ids to remove, as a flat int64 array. Each must be below limit (the
  size of the sampler's id table), present, and given once."""
  ids = np.asarray(itemids, np.int64).reshape(-1)
  if len(ids) and (ids.min() < 0 or ids.max() >= limit or
                   not present(ids).all() or len(np.unique(ids)) < len(ids)):
    raise KeyError('Removing item ids that are not present.')
  return ids


def _grow(array, size, fill=0):
  """array, grown geometrically (amortised O(1) appends) to hold at least
  size entries; new entries are fill."""
  if size <= len(array):
    return array
  grown = np.full(max(size, 2 * len(array), 64), fill, array.dtype)
  grown[:len(array)] = array
  return grown


class Sampler:
  """Interface: a set of item ids that can be sampled from."""

  def insert(self, itemids):
    raise NotImplementedError

  def remove(self, itemids):
    raise NotImplementedError

  def sample(self, n, commit=True):
    """n item ids. commit=False draws from the same distribution without
    changing any sampler state (for report batches that are not trained on
    and so never get a priority back)."""
    raise NotImplementedError

  def prioritize(self, itemids, values):
    """itemids [B], values [B, T]: per-step signals of the trained steps of
    each item. Hook for prioritized replay; other samplers ignore it."""

  def _seed_rngs(self, seed):
    # commit=False draws (report batches, taken when the loop's schedule
    # says) have a stream of their own: the train batches stay the same
    # whenever and however often reports run.
    self._rng = np.random.default_rng(seed)
    self._peek_rng = np.random.default_rng(
        np.random.SeedSequence(seed).spawn(1)[0])

  def _draws(self, commit):
    return self._rng if commit else self._peek_rng

  def __len__(self):
    raise NotImplementedError

  def stats(self):
    """Scalar metrics, logged under replay/."""
    return {}

  def save(self):
    raise NotImplementedError

  def load(self, data):
    raise NotImplementedError


class Uniform(Sampler):
  """Uniform sampling over a dense key array with an id -> index map.

  Removal swaps the last keys into the holes, so insert, remove and sample
  are O(1) per id and vectorised over the ids passed in.
  """

  @classmethod
  def from_config(cls, replay, seed):
    return cls(seed)

  def __init__(self, seed=0):
    self._seed_rngs(seed)
    self._keys = np.zeros(0, np.int64)   # keys[:size] are the live ids
    self._index = np.zeros(0, np.int64)  # id -> position in keys, or -1
    self._size = 0

  def __len__(self):
    return self._size

  def insert(self, itemids):
    ids = _new_ids(itemids)
    if not len(ids):
      return
    self._keys = _grow(self._keys, self._size + len(ids))
    self._index = _grow(self._index, int(ids.max()) + 1, -1)
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
    ids = _old_ids(itemids, len(self._index), lambda i: self._index[i] >= 0)
    if not len(ids):
      return
    where = self._index[ids]
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

  def sample(self, n, commit=True):
    if not self._size:
      raise ValueError('Cannot sample from an empty sampler: add data first.')
    return self._keys[self._draws(commit).integers(0, self._size, int(n))]

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


def parse_initial(initial):
  """replay.prio.initial -> float (a number or inf) or 'meanstd'."""
  if isinstance(initial, str) and initial.strip().lower() == 'meanstd':
    return 'meanstd'
  try:
    value = float(initial)
  except (TypeError, ValueError):
    raise ValueError(
        f"replay.prio.initial must be a number, 'inf' or 'meanstd', got "
        f'{initial!r}') from None
  if not value >= 0:
    raise ValueError(
        f'replay.prio.initial must be non-negative, got {initial!r}')
  return value


class Prioritized(Sampler):
  """Samples items with probability proportional to priority ** exponent.

  The priority of an item is maxfrac * max + (1 - maxfrac) * mean of the
  per-step signals the train step reported for it (clipped at zero). Items
  that have not been trained on yet get `initial`:
    - a number;
    - 'meanstd': mean + std of the priorities of items updated so far
      (1.0 before the first update). Only updated items count, so that new
      items do not feed their own initial value back into the statistics;
    - inf: the item waits in a queue that is sampled before the tree (inf
      cannot live in a sum-tree). Queued items are drawn uniformly at random
      without replacement; once drawn, an item holds the meanstd value (zero
      with zero_on_sample) until its priority arrives, so an update that is
      lost cannot strand it.
  zero_on_sample sets a drawn item's weight to zero until its next update.
  Tree draws are independent (with replacement), like Uniform's. When every
  weight is zero, draws fall back to uniform over all items.

  Storage is flat over the id space (see SumTree), 13 bytes per id.
  """

  ABSENT, FRESH, PENDING, UPDATED = 0, 1, 2, 3

  @classmethod
  def from_config(cls, replay, seed):
    p = replay.prio
    return cls(p.exponent, p.maxfrac, p.initial, p.zero_on_sample, seed=seed)

  def __init__(self, exponent=0.8, maxfrac=0.5, initial='meanstd',
               zero_on_sample=False, seed=0, branching=32):
    if not 0 <= maxfrac <= 1:
      raise ValueError(f'replay.prio.maxfrac must be in [0, 1], got {maxfrac}')
    if not exponent >= 0:
      raise ValueError(
          f'replay.prio.exponent must be non-negative, got {exponent}')
    self.exponent = float(exponent)
    self.maxfrac = float(maxfrac)
    self.initial = parse_initial(initial)
    self.zero_on_sample = bool(zero_on_sample)
    self._seed_rngs(seed)
    self._tree = SumTree(0, branching)
    self._reset(0)

  def _reset(self, capacity):
    self._tree = SumTree(capacity, self._tree.branching)
    cap = self._tree.capacity
    self._state = np.zeros(cap, np.int8)
    self._prio = np.zeros(cap, np.float32)  # priority before the exponent
    self._size = 0
    self._pending = np.zeros(64, np.int64)  # queued ids (some may be stale)
    self._plen = 0
    self._npending = 0  # live entries among them
    # Running sums over UPDATED items for meanstd; recomputed exactly in
    # stats() and load() so rounding cannot accumulate.
    self._sum = self._sumsq = 0.0
    self._count = 0

  def __len__(self):
    return self._size

  # Writing.

  def insert(self, itemids):
    ids = _new_ids(itemids)
    if not len(ids):
      return
    self._reserve(int(ids.max()) + 1)
    _check_new(ids, self._present)
    self._size += len(ids)
    if self.initial == float('inf'):
      self._state[ids] = self.PENDING
      self._prio[ids] = np.inf
      self._push_pending(ids)
      return  # Leaves stay zero.
    value = self._initial_value()
    self._state[ids] = self.FRESH
    self._prio[ids] = value
    self._tree.set(ids, value ** self.exponent)

  def remove(self, itemids):
    ids = _old_ids(itemids, len(self._state), self._present)
    if not len(ids):
      return
    state = self._state[ids]
    self._forget_stats(ids[state == self.UPDATED])
    self._npending -= int((state == self.PENDING).sum())
    self._state[ids] = self.ABSENT
    self._prio[ids] = 0
    self._tree.set(ids, 0.0)
    self._size -= len(ids)
    if self._plen > 2 * self._npending + 1024:
      self._compact_pending()

  def prioritize(self, itemids, values):
    """Rows whose id is not present (evicted meanwhile) or whose signal is
    not finite are dropped; for a repeated id the last row wins."""
    ids = np.asarray(itemids, np.int64).reshape(-1)
    values = np.asarray(values, np.float64).reshape(len(ids), -1)
    prio = self.maxfrac * values.max(1) + (1 - self.maxfrac) * values.mean(1)
    keep = np.isfinite(prio) & (ids >= 0) & (ids < len(self._state))
    ids, prio = ids[keep], np.maximum(prio[keep], 0.0)
    keep = self._state[ids] != self.ABSENT
    ids, prio = ids[keep], prio[keep]
    if not len(ids):
      return
    uniq, last = np.unique(ids[::-1], return_index=True)
    ids, prio = uniq, prio[::-1][last]
    state = self._state[ids]
    self._forget_stats(ids[state == self.UPDATED])
    self._npending -= int((state == self.PENDING).sum())
    prio = prio.astype(np.float32)  # What is stored is what counts.
    p64 = prio.astype(np.float64)
    self._sum += p64.sum()
    self._sumsq += (p64 ** 2).sum()
    self._count += len(ids)
    self._state[ids] = self.UPDATED
    self._prio[ids] = prio
    self._tree.set(ids, p64 ** self.exponent)

  # Reading.

  def sample(self, n, commit=True):
    n = int(n)
    if not self._size:
      raise ValueError('Cannot sample from an empty sampler: add data first.')
    ids = self._take_pending(n, commit) if self._npending else \
        np.zeros(0, np.int64)
    need = n - len(ids)
    rng = self._draws(commit)
    if need > 0:
      if self._tree.total > 0:
        rest = self._tree.sample(need, rng)
      else:
        live = np.flatnonzero(self._state != self.ABSENT)
        rest = live[rng.integers(0, len(live), need)]
      ids = np.concatenate([ids, rest])
    if commit and self.zero_on_sample:
      self._tree.set(ids, 0.0)
    return ids

  def stats(self):
    self._exact_stats()
    live = self._state != self.ABSENT
    updated = self._state == self.UPDATED
    mean, std = self._moments()
    out = {
        'prio_mean': mean, 'prio_std': std,
        'prio_max': float(self._prio[updated].max()) if self._count else 0.0,
        'prio_never_updated': float((live & ~updated).sum()) / max(
            1, self._size),
        'prio_queued': self._npending}
    return out

  # Persistence.

  def save(self):
    ids = np.flatnonzero(self._state != self.ABSENT)
    return {
        'capacity': self._tree.capacity, 'branching': self._tree.branching,
        'ids': ids, 'state': self._state[ids].copy(),
        'prio': self._prio[ids].copy(), 'weight': self._tree.get(ids),
        'pending': self._pending[:self._plen].copy(), 'rng': self._rng.bit_generator.state}

  def load(self, data):
    self._reset(int(data['capacity']))
    ids = np.asarray(data['ids'], np.int64)
    self._state[ids] = data['state']
    self._prio[ids] = data['prio']
    self._size = len(ids)
    leaves = np.zeros(self._tree.capacity, np.float64)
    leaves[ids] = data['weight']
    self._tree.assign(leaves)
    # The queue as it was, stale entries included: draws index into it.
    self._push_pending(np.asarray(data['pending'], np.int64))
    self._npending = int((self._state == self.PENDING).sum())
    self._rng.bit_generator.state = data['rng']
    self._exact_stats()

  # Internals.

  def _present(self, ids):
    return self._state[ids] != self.ABSENT

  def _reserve(self, size):
    if size <= len(self._state):
      return
    self._tree.reserve(size)
    cap = self._tree.capacity
    for name in ('_state', '_prio'):
      old = getattr(self, name)
      new = np.zeros(cap, old.dtype)
      new[:len(old)] = old
      setattr(self, name, new)

  def _moments(self):
    if not self._count:
      return 0.0, 0.0
    mean = self._sum / self._count
    var = max(0.0, self._sumsq / self._count - mean ** 2)
    return float(mean), float(np.sqrt(var))

  def _initial_value(self):
    if self.initial == 'meanstd':
      return self._mean_std_or_one()
    return float(self.initial)

  def _forget_stats(self, ids):
    if len(ids):
      old = self._prio[ids].astype(np.float64)
      self._sum -= old.sum()
      self._sumsq -= (old ** 2).sum()
      self._count -= len(ids)

  def _exact_stats(self):
    old = self._prio[self._state == self.UPDATED].astype(np.float64)
    self._sum, self._sumsq, self._count = old.sum(), (old ** 2).sum(), len(old)

  def _push_pending(self, ids):
    end = self._plen + len(ids)
    self._pending = _grow(self._pending, end)
    self._pending[self._plen:end] = ids
    self._plen = end
    self._npending += len(ids)

  def _compact_pending(self):
    entries = self._pending[:self._plen]
    entries = np.unique(entries[self._state[entries] == self.PENDING])
    self._pending[:len(entries)] = entries
    self._plen = len(entries)

  def _take_pending(self, n, commit):
    """Up to n distinct queued ids, uniformly at random. With commit they
    leave the queue (O(n) swap-removal); stale entries met on the way (items
    removed or updated meanwhile) are dropped."""
    taken = np.zeros(0, np.int64)
    for _ in range(16):
      need = n - len(taken)
      if need <= 0 or not self._npending or not self._plen:
        break
      if self._plen > 2 * self._npending + 1024:
        self._compact_pending()
      pos = self._draws(commit).choice(
          self._plen, min(need, self._plen), replace=False)
      ids = self._pending[pos]
      ids = ids[self._state[ids] == self.PENDING]
      ids = np.setdiff1d(ids, taken)  # Repeated queue entries of one id.
      if commit:
        self._drop_pending(pos)
        value = self._mean_std_or_one()
        self._state[ids] = self.FRESH
        self._prio[ids] = value
        self._npending -= len(ids)
        self._tree.set(ids, 0.0 if self.zero_on_sample else
                       value ** self.exponent)
      taken = np.concatenate([taken, ids])
    return taken

  def _mean_std_or_one(self):
    if not self._count:
      return 1.0
    mean, std = self._moments()
    return mean + std

  def _drop_pending(self, pos):
    """Swap-removes the entries at the distinct positions pos."""
    size = self._plen - len(pos)
    tail = np.ones(self._plen - size, bool)
    tail[pos[pos >= size] - size] = False
    movers = self._pending[size:self._plen][tail]
    self._pending[pos[pos < size]] = movers
    self._plen = size


class Recency(Sampler):
  """Samples recent items more: p(item) ∝ (age + 1) ** -recexp, where age is
  the number of items inserted after it (removed ones included, so an
  item's age does not jump when older data is evicted). recexp 0 is uniform.

  Items are kept in insertion order, so a draw is an inverse-CDF lookup of an
  age in a cached table of cumulative weights (O(log n)); an age whose item
  was removed is redrawn, which keeps the distribution exact over the live
  items. Evictions remove the oldest items, so such holes stay rare.
  """

  @classmethod
  def from_config(cls, replay, seed):
    return cls(replay.recexp, seed=seed)

  def __init__(self, recexp=1.0, seed=0):
    if not recexp >= 0:
      raise ValueError(f'replay.recexp must be non-negative, got {recexp}')
    self.recexp = float(recexp)
    self._seed_rngs(seed)
    self._reset()

  def _reset(self):
    self._order = np.zeros(64, np.int64)  # ids by seq - offset, -1 removed
    self._offset = 0   # seq of _order[0]
    self._base = 0     # seqs below are all removed
    self._next = 0     # seq of the next insert
    self._seqof = np.zeros(0, np.int64)  # id -> seq, or -1
    self._cdf = np.zeros(0, np.float64)  # cdf[a] = sum_{j<=a} (j + 1)^-recexp
    self._size = 0

  def __len__(self):
    return self._size

  def insert(self, itemids):
    ids = _new_ids(itemids)
    if not len(ids):
      return
    self._seqof = _grow(self._seqof, int(ids.max()) + 1, -1)
    _check_new(ids, lambda i: self._seqof[i] >= 0)
    end = self._next - self._offset + len(ids)
    self._order = _grow(self._order, end, -1)
    seqs = self._next + np.arange(len(ids))
    self._order[seqs - self._offset] = ids
    self._seqof[ids] = seqs
    self._next += len(ids)
    self._size += len(ids)

  def remove(self, itemids):
    ids = _old_ids(itemids, len(self._seqof), lambda i: self._seqof[i] >= 0)
    if not len(ids):
      return
    self._order[self._seqof[ids] - self._offset] = -1
    self._seqof[ids] = -1
    self._size -= len(ids)
    self._trim()

  def sample(self, n, commit=True):
    n = int(n)
    if not self._size:
      raise ValueError('Cannot sample from an empty sampler: add data first.')
    span = self._next - self._base
    self._table(span)
    ids = np.full(n, -1, np.int64)
    todo = np.arange(n)
    rng = self._draws(commit)
    for _ in range(64):
      u = rng.random(len(todo)) * self._cdf[span - 1]
      age = np.minimum(np.searchsorted(self._cdf[:span], u, 'right'), span - 1)
      ids[todo] = self._order[self._next - 1 - age - self._offset]
      todo = todo[ids[todo] < 0]
      if not len(todo):
        return ids
    # Holes dominate (not expected from FIFO eviction): exact slow path.
    ages = self._next - 1 - np.arange(self._base, self._next)
    live = self._order[self._base - self._offset:self._next - self._offset]
    weight = np.where(live >= 0, (ages + 1.0) ** -self.recexp, 0.0)
    pick = rng.choice(len(live), len(todo), p=weight / weight.sum())
    ids[todo] = live[pick]
    return ids

  def ages(self, itemids):
    """Age of each item as defined above."""
    return self._next - 1 - self._seqof[np.asarray(itemids, np.int64)]

  def save(self):
    seqs = np.arange(self._base, self._next)
    ids = self._order[seqs - self._offset]
    live = ids >= 0
    return {'ids': ids[live], 'seqs': seqs[live], 'next': self._next,
            'rng': self._rng.bit_generator.state}

  def load(self, data):
    self._reset()
    ids = np.asarray(data['ids'], np.int64)
    seqs = np.asarray(data['seqs'], np.int64)
    start = int(seqs[0]) if len(seqs) else int(data['next'])
    self._offset = self._base = self._next = start
    self._order = np.full(max(64, int(data['next']) - start), -1, np.int64)
    if len(ids):
      self._seqof = np.full(max(64, int(ids.max()) + 1), -1, np.int64)
      self._order[seqs - start] = ids
      self._seqof[ids] = seqs
    self._next = int(data['next'])
    self._size = len(ids)
    self._rng.bit_generator.state = data['rng']

  def _trim(self):
    """Advances the base past removed seqs and drops the dead prefix from
    memory once it is half of the array."""
    while self._base < self._next:
      lo = self._base - self._offset
      block = self._order[lo:min(lo + 4096, self._next - self._offset)]
      alive = np.flatnonzero(block >= 0)
      if len(alive):
        self._base += int(alive[0])
        break
      self._base += len(block)
    dead = self._base - self._offset
    if dead > len(self._order) // 2:
      self._order = self._order[dead:].copy()
      self._offset = self._base

  def _table(self, span):
    """Extends the cumulative weights to cover ages below span."""
    have = len(self._cdf)
    if span <= have:
      return
    size = max(span, 2 * have, 1024)
    terms = np.arange(have + 1, size + 1, dtype=np.float64) ** -self.recexp
    start = self._cdf[-1] if have else 0.0
    self._cdf = np.concatenate([self._cdf, start + np.cumsum(terms)])


# replay.fracs key -> sampler class.
SAMPLERS = {'uniform': Uniform, 'priority': Prioritized, 'recency': Recency}
RANGES = ((r'replay\.prio\.maxfrac', 'number', 0, 1),)


def make(replay, seed):
  """The sampler of the `replay` config: the one sampler whose fraction is
  positive (pure uniform is the plain Uniform), else a Mixture of those
  with positive fractions. seed(name) gives each part its own stream, so
  the parts of a mixture draw independently."""
  fracs = {k: v for k, v in dict(replay.fracs).items() if v > 0}
  parts = {name: SAMPLERS[name].from_config(replay, seed(name))
           for name in SAMPLERS if name in fracs}
  if len(parts) == 1:
    return next(iter(parts.values()))
  return Mixture(parts, fracs)


def check(config):
  """The registry's checks of replay.fracs and every sampler's options
  (whether used or not)."""
  replay = config.replay
  fracs = dict(replay.fracs)
  for key, value in fracs.items():
    if key not in SAMPLERS:
      return (f"Unknown sampler 'replay.fracs.{key}': choose from "
              f"{', '.join(SAMPLERS)}")
    if value < 0:
      return f'replay.fracs.{key} must be non-negative, got {value}'
  if not sum(fracs.values()) > 0:
    return ('replay.fracs must have a positive sum, got ' + ', '.join(
        f'replay.fracs.{k} {v}' for k, v in fracs.items()))
  for cls in SAMPLERS.values():
    try:
      cls.from_config(replay, 0)
    except ValueError as e:
      return str(e)
  return None


def split_counts(fracs, n):
  """Exact number of n draws per sampler: largest remainder rounding of
  n * frac / sum(fracs); ties go to the earlier sampler. Always sums to n."""
  fracs = np.asarray(fracs, np.float64)
  share = n * fracs / fracs.sum()
  counts = np.floor(share).astype(np.int64)
  rest = n - counts.sum()
  # Largest fractional part first; a zero fraction never gets a draw.
  order = sorted(range(len(fracs)),
                 key=lambda i: (fracs[i] <= 0, counts[i] - share[i], i))
  for i in order[:rest]:
    counts[i] += 1
  return counts


class Mixture(Sampler):
  """Every batch takes an exact number of items from each sampler (see
  split_counts), concatenated in the order given. Every sampler sees every
  insert, removal and priority update."""

  def __init__(self, samplers, fracs):
    """samplers: {name: Sampler}; fracs: {name: fraction}."""
    if set(samplers) != set(fracs):
      raise ValueError(f'Mixture needs a fraction per sampler: '
                       f'{sorted(samplers)} vs {sorted(fracs)}')
    self.names = list(samplers)
    self.samplers = samplers
    self.fracs = [float(fracs[k]) for k in self.names]
    if min(self.fracs) < 0 or not sum(self.fracs) > 0:
      raise ValueError(f'Mixture fractions must be non-negative with a '
                       f'positive sum, got {dict(fracs)}')

  def __len__(self):
    return len(self.samplers[self.names[0]])

  def insert(self, itemids):
    for sampler in self.samplers.values():
      sampler.insert(itemids)

  def remove(self, itemids):
    for sampler in self.samplers.values():
      sampler.remove(itemids)

  def prioritize(self, itemids, values):
    for sampler in self.samplers.values():
      sampler.prioritize(itemids, values)

  def sample(self, n, commit=True):
    parts = [self.samplers[k].sample(c, commit)
             for k, c in zip(self.names, split_counts(self.fracs, int(n))) if c]
    return np.concatenate(parts) if parts else np.zeros(0, np.int64)

  def stats(self):
    out = {}
    for sampler in self.samplers.values():
      out.update(sampler.stats())
    return out

  def save(self):
    return {k: s.save() for k, s in self.samplers.items()}

  def load(self, data):
    for k, s in self.samplers.items():
      s.load(data[k])
