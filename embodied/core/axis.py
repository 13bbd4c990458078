"""The member axis: how an agent of several seeds trained as one program
(run.seeds) lays out everything it exchanges, and how a one-seed agent
does.

One seed has no axis: state, batches, carries, inputs and outputs are those
of a one-agent run, and its checkpoints stay the one-seed format. N seeds
add a leading axis of size N to every one of them, and the programs are
vmapped over it. Every place that depends on the layout asks this object,
so the agent and the loops have one code path for both.
"""

import elements
import numpy as np


class MemberAxis:

  def __init__(self, seeds=None, seed=0):
    """seeds: the members' seeds (a list, even of one, gives the axis), or
    None for one agent of `seed` without an axis."""
    self.stacked = seeds is not None
    self.seeds = [int(s) for s in seeds] if self.stacked else [int(seed)]
    self.count = len(self.seeds)
    if not self.seeds:
      raise ValueError('A member axis needs at least one seed.')

  def map(self, fn, vmap):
    """fn over one member -> fn over the layout: vmap(fn) (e.g. jax.vmap)
    with an axis."""
    return vmap(fn) if self.stacked else fn

  def stack(self, values):
    """Per-member pytrees of NumPy arrays (one per seed) -> the layout."""
    assert len(values) == self.count, (len(values), self.count)
    if not self.stacked:
      return values[0]
    return elements.tree.map(lambda *xs: np.stack(xs), *values)

  def split(self, tree):
    """The layout -> one pytree per member (stack's inverse)."""
    if not self.stacked:
      return [tree]
    return [elements.tree.map(lambda x, k=k: np.asarray(x)[k], tree)
            for k in range(self.count)]

  def member_shape(self, shape):
    """An array's shape in the layout -> one member's shape."""
    return tuple(shape[1:]) if self.stacked else tuple(shape)

  def to_members(self, x):
    """An array of all members' rows in a row, [N * E, ...] -> the layout
    ([N, E, ...] with an axis)."""
    if not self.stacked:
      return x
    return x.reshape((self.count, x.shape[0] // self.count, *x.shape[1:]))

  def from_members(self, x):
    """to_members' inverse."""
    if not self.stacked:
      return x
    return x.reshape((x.shape[0] * x.shape[1], *x.shape[2:]))
