"""Replay kept on the accelerator (config `replay.device: accelerator`).

DeviceReplay is the host Replay (embodied/core/replay.py) plus a mirror of
its storage on the first JAX device. The host replay stays the source of
truth for everything but the gather: inserts, samplers, priorities, the
online queue, files and checkpoints work as before. A sample picks its
items on the host as before, then gathers the batch from the mirror with
one jitted take, so the batch is born on the device and only the [B, T]
item index crosses from the host.

The mirror follows the host by dirty steps: every write to host storage (an
inserted step, a new chunk's copied prefix, values written back by a train
step) marks its flat step id; the next sample first uploads the current host
values of the marked steps with one scatter per key (index counts padded to
powers of two, so few shapes compile). A new key, a grown allocation or a
load re-uploads everything. So observations and actions cross to the device
once, when inserted, and the latents a train step writes back cross once
more (they are written on the host, then uploaded).

Several such replays (the members of a multi-seed run) stack their batches
on the device (stack()).

Batches are identical to the host replay's for the same seed (test_replay),
except that JAX stores 64-bit values in 32 bits unless x64 is enabled;
`stepid` stays a NumPy int64 array. Memory: the whole buffer lives on the
device, meant for small observations (MinAtar, vectors); a 1e6-step Atari
buffer of 64x64 frames would take ~4 GB more.
"""

import functools

import jax
import numpy as np

from embodied.core.replay import Replay


@jax.jit
def _take(data, index):
  return {k: v[index] for k, v in data.items()}


# The mirror is donated: updated in place instead of copied whole.
@functools.partial(jax.jit, donate_argnums=0)
def _scatter(data, index, values):
  return {k: data[k].at[index].set(values[k]) for k in data}


@jax.jit
def _stack(batches):
  return {k: jax.numpy.stack([b[k] for b in batches]) for k in batches[0]}


class DeviceReplay(Replay):

  def __init__(self, *args, device=None, **kwargs):
    self.device = device or jax.devices()[0]
    super().__init__(*args, **kwargs)

  def _reset(self):
    super()._reset()
    self._mirror = {}
    self._dirty = []
    self._stale = True  # Everything needs uploading.

  # Writes to host storage mark what the mirror lacks.

  def _allocate(self, key, dtype, shape):
    super()._allocate(key, dtype, shape)
    self._stale = True

  def _grow(self, slots):
    alloc = self._alloc
    super()._grow(slots)
    if self._alloc != alloc:
      self._stale = True

  def _open_chunk(self, prev):
    slot = super()._open_chunk(prev)
    # The copied prefix of the predecessor's last steps; the rest of the
    # slot is only read once later adds have marked it.
    start = slot * self.chunksize
    self._dirty.append(np.arange(start, start + self._fill[slot]))
    return slot

  def _add(self, step, worker):
    pending = super()._add(step, worker)
    slot = self._streams[worker]['slot']
    self._dirty.append(np.array([slot * self.chunksize + self._fill[slot] - 1]))
    return pending

  def update(self, stepid, values):
    super().update(stepid, values)
    with self._lock:
      self._dirty.append(np.asarray(stepid, np.int64).reshape(-1))

  def _load(self, data):
    result = super()._load(data)
    self._stale = True
    return result

  @staticmethod
  def stack(batches):
    """Stacked on the device; the host's stepid on the host."""
    stepid = np.stack([b.pop('stepid') for b in batches])
    out = _stack(batches)
    for b, ids in zip(batches, stepid):
      b['stepid'] = ids
    out['stepid'] = stepid
    return out

  # Reading from the mirror.

  def _gather(self, itemids):
    self._sync()
    slot, pos = np.divmod(itemids, self.chunksize)
    index = slot[:, None] * self.chunksize + pos[:, None] + np.arange(
        self.length)
    batch = _take(self._mirror, jax.device_put(
        index.astype(np.int32), self.device))
    batch['stepid'] = index
    self._recent.append((itemids.copy(), self._gen[slot]))
    return batch

  def _flat(self, key):
    value = self._data[key]
    return value.reshape((-1, *value.shape[2:]))

  def _sync(self):
    """Uploads the marked steps (or everything when stale)."""
    if self._stale:
      self._mirror = {k: jax.device_put(self._flat(k), self.device)
                      for k in self._data}
      self._dirty, self._stale = [], False
      return
    if not self._dirty or not self._mirror:
      return
    index = np.unique(np.concatenate(self._dirty))
    self._dirty = []
    index = index[(index >= 0) & (index < self._alloc * self.chunksize)]
    if not len(index):
      return
    # Pad with repeats of the last id (same value written twice).
    size = 1 << int(np.ceil(np.log2(len(index))))
    index = np.concatenate([index, np.full(size - len(index), index[-1])])
    values = {k: self._flat(k)[index] for k in self._mirror}
    self._mirror = _scatter(
        self._mirror, jax.device_put(index.astype(np.int32), self.device),
        jax.device_put(values, self.device))
