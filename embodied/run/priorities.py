"""Buffer-wide priority refresh (uncertainty caching): every
`every` train steps, recompute the uncertainty of every replay item with
batched forward passes and replace all priorities.

Items overlap: the item at position p of a chunk trains on steps
p + K .. p + L - 1 (K replay context steps, L sequence length), so every
step belongs to L - K items. Running the model once per item would compute
each step's uncertainty L - K times. Instead the chunks are cut into
windows that cover every step once (stride L - K), each step's uncertainty
is computed once in the window that contains it, and every item's
per-step signals are read from those values. This makes a refresh ~L - K
times cheaper; a step's value then comes from the window's posterior
context rather than from each item's own.
"""

import time

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view


class PriorityRefresh:

  def __init__(self, agent, replay, batch_size, every, context,
               prepare=None):
    """context: replay context steps K at the start of each sequence,
    which the model reads but reports no signal for. prepare(batch) ->
    batch completes a replay batch for the agent (e.g. zero latents for
    keys no train step has written yet)."""
    self.agent = agent
    self.replay = replay
    self.batch_size = int(batch_size)
    self.every = int(every)
    self.context = int(context)
    self.prepare = prepare or (lambda batch: batch)
    self.last = {}

  def __call__(self, updates):
    if self.every and updates % self.every == 0:
      self.refresh()

  def refresh(self):
    start = time.perf_counter()
    ids = self.replay.item_ids()
    if not len(ids):
      return
    chunk, K = self.replay.chunksize, self.context
    T = self.replay.length - K
    slots, first = np.unique(ids // chunk, return_index=True)
    counts = np.diff(np.append(first, len(ids)))  # items per chunk
    windows = self._windows(ids, first, counts, T)
    # Per-step values, indexed [chunk index, position in chunk].
    table = np.full((len(slots), chunk), np.nan, np.float64)
    row = np.searchsorted(slots, windows // chunk)
    B = self.batch_size
    for i in range(0, len(windows), B):
      batch = windows[i:i + B]
      n = len(batch)
      padded = np.concatenate([batch, np.full(B - n, batch[-1])])
      data = self.prepare(self.replay.gather(padded))
      values = np.asarray(self.agent.uncertainty(data), np.float64)[:n]
      pos = (batch % chunk)[:, None] + K + np.arange(T)
      table[row[i:i + n, None], pos] = values
    # Each item's trained steps are a sliding window over its chunk's row.
    for j, slot in enumerate(slots):
      n = counts[j]
      values = sliding_window_view(table[j, K:K + n + T - 1], T)
      stepid = slot * chunk + K + sliding_window_view(
          np.arange(n + T - 1), T)
      self.replay.prioritize(stepid, values)
    self.last = {'replay/cache_seconds': time.perf_counter() - start,
                 'replay/cache_items': len(ids),
                 'replay/cache_batches': -(-len(windows) // B)}

  @staticmethod
  def _windows(ids, first, counts, T):
    """Item ids whose trained steps together cover every trained step of
    every chunk once (a chunk's last window may overlap the one before)."""
    out = []
    for j, n in enumerate(counts):
      starts = np.arange(0, n, T)
      if starts[-1] != n - 1:
        starts = np.append(starts, n - 1)
      out.append(ids[first[j] + starts])
    return np.concatenate(out)

  def stats(self):
    """Figures of the latest refresh, reported once."""
    out, self.last = self.last, {}
    return out
