"""A vectorised sum-tree over a flat space of integer ids.

Leaves hold non-negative float64 weights, one per id in [0, capacity). Every
inner node holds the sum of its `branching` children, recomputed exactly from
the children whenever one of them changes (never by adding deltas), so the
tree cannot drift: each node is always the same function of its leaves.

A wide tree (32 children per node by default) needs 5 levels for 1e7 ids, so
a batch of B draws or updates costs a handful of NumPy calls per level on
[B, branching] arrays instead of one Python step per item and level.

Ids are flat rather than packed densely: replay ids are `slot * chunksize +
pos`, which stay below the capacity of the buffer, so insert and remove are
plain leaf writes with no index map. Unused ids are zero leaves and are never
drawn.
"""

import numpy as np


class SumTree:

  def __init__(self, capacity=0, branching=32):
    if branching < 2:
      raise ValueError(f'SumTree branching must be at least 2, got {branching}')
    self.branching = int(branching)
    self._levels = []  # root level first, leaves last
    self._build(np.zeros(0, np.float64), int(capacity))

  @property
  def capacity(self):
    return len(self._levels[-1])

  @property
  def total(self):
    return float(self._levels[0][0])

  @property
  def leaves(self):
    """Read-only view of the leaf weights."""
    view = self._levels[-1].view()
    view.flags.writeable = False
    return view

  def reserve(self, size):
    """Make room for ids below `size`; grows geometrically (amortised O(1))."""
    if size > self.capacity:
      self._build(self._levels[-1], max(int(size), 2 * self.capacity))

  def assign(self, leaves):
    """Replaces all leaves (the capacity becomes their count, rounded up to
    the layout) and rebuilds every inner node from them."""
    leaves = np.asarray(leaves, np.float64).reshape(-1)
    if not (leaves >= 0).all():
      raise ValueError('SumTree weights must be non-negative numbers.')
    self._build(leaves, len(leaves))

  def get(self, ids):
    ids = np.asarray(ids, np.int64)
    out = np.zeros(ids.shape, np.float64)
    inside = ids < self.capacity
    out[inside] = self._levels[-1][ids[inside]]
    return out

  def set(self, ids, values):
    """Sets leaves ids to values (duplicate ids: the last value wins), then
    recomputes the affected parents level by level: O(B branching log n)."""
    ids = np.asarray(ids, np.int64).reshape(-1)
    values = np.broadcast_to(np.asarray(values, np.float64), ids.shape)
    if not len(ids):
      return
    if ids.min() < 0:
      raise ValueError('SumTree ids must be non-negative.')
    if not (values >= 0).all():  # Also rejects NaN.
      raise ValueError('SumTree weights must be non-negative numbers.')
    self.reserve(int(ids.max()) + 1)
    # Keep the last occurrence of each id, so the result does not depend on
    # how NumPy orders repeated fancy-index writes.
    rev = ids[::-1]
    uniq, first = np.unique(rev, return_index=True)
    self._levels[-1][uniq] = values[::-1][first]
    nodes = uniq
    k = self.branching
    for depth in range(len(self._levels) - 2, -1, -1):
      # Repeated parents are fine: each write stores the same exact sum.
      nodes = nodes // k
      children = self._levels[depth + 1].reshape(-1, k)
      self._levels[depth][nodes] = children[nodes].sum(1)

  def sample(self, n, rng):
    """n independent draws, each id with probability weight / total."""
    total = self.total
    if not total > 0:
      raise ValueError('Cannot sample from a sum-tree whose weights are all '
                       'zero.')
    return self.find(rng.random(int(n)) * total)

  def find(self, values):
    """Ids whose cumulative weight interval contains each value in
    [0, total). Descends all values together, one level at a time."""
    values = np.asarray(values, np.float64).copy()
    nodes = np.zeros(len(values), np.int64)
    k = self.branching
    rows = np.arange(len(values))
    for level in self._levels[1:]:
      children = level.reshape(-1, k)[nodes]           # [B, k]
      cums = np.cumsum(children, 1)
      choice = (values[:, None] >= cums).sum(1)
      # Rounding can push a value past the last non-empty child (the parent
      # sum and this cumsum add in different orders); clamp to it. A zero
      # child can never be chosen otherwise: its interval is empty.
      over = choice == k
      if over.any():
        last = k - 1 - np.argmax(children[over, ::-1] > 0, 1)
        choice[over] = last
        values[over] = cums[over, last]  # Stays at the end below.
      before = cums[rows, choice] - children[rows, choice]
      values = np.maximum(values - before, 0.0)
      nodes = nodes * k + choice
    return nodes

  def check(self):
    """Asserts that every inner node equals the sum of its children."""
    k = self.branching
    for depth in range(len(self._levels) - 1):
      children = self._levels[depth + 1].reshape(-1, k).sum(1)
      parents = self._levels[depth]
      assert np.array_equal(parents[:len(children)], children), depth
      assert not parents[len(children):].any(), depth

  def _build(self, leaves, capacity):
    """Lays out levels for at least `capacity` leaves and fills every inner
    node from the leaves. Each level's length is a multiple of branching (the
    root level excepted) so a level reshapes to [parents, branching]."""
    k = self.branching
    sizes = [max(k, -(-capacity // k) * k)]
    while sizes[-1] > k:
      sizes.append(-(-sizes[-1] // k // k) * k)
    sizes.append(1)
    levels = [np.zeros(s, np.float64) for s in reversed(sizes)]
    levels[-1][:len(leaves)] = leaves
    for depth in range(len(levels) - 2, -1, -1):
      sums = levels[depth + 1].reshape(-1, k).sum(1)
      levels[depth][:len(sums)] = sums
    self._levels = levels
