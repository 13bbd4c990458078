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

from embodied.core.replay import Stacked


class PriorityRefresh:

  def __init__(self, agent, replay, batch_size, every, context,
               prepare=None):
    """replay: one replay, or the Stacked replays of a multi-seed run's
    members (each refreshed from its own items; one model call per batch
    covers all members). context: replay context steps K at the start of
    each sequence, which the model reads but reports no signal for.
    prepare(batch) -> batch completes a replay batch for the agent (e.g.
    zero latents for keys no train step has written yet)."""
    self.agent = agent
    self.stacked = isinstance(replay, Stacked)
    self.replays = replay.replays if self.stacked else [replay]
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
    plans = [self._plan(replay) for replay in self.replays]
    # Members step in lockstep, so one without items means all have none.
    if any(plan is None for plan in plans):
      return
    K, B = self.context, self.batch_size
    T = self.replays[0].length - K
    longest = max(len(plan['windows']) for plan in plans)
    for i in range(0, longest, B):
      batches, sizes = [], []
      for replay, plan in zip(self.replays, plans):
        windows = plan['windows']
        batch = windows[i:i + B] if i < len(windows) else windows[-1:]
        sizes.append(len(windows[i:i + B]))
        padded = np.concatenate([batch, np.full(B - len(batch), batch[-1])])
        batches.append(self.prepare(replay.gather(padded)))
      data = self.replays[0].stack(batches) if self.stacked else batches[0]
      values = np.asarray(self.agent.uncertainty(data), np.float64)
      values = values if self.stacked else values[None]
      for plan, member, n in zip(plans, values, sizes):
        if not n:
          continue
        batch = plan['windows'][i:i + n]
        chunk = self.replays[0].chunksize
        pos = (batch % chunk)[:, None] + K + np.arange(T)
        plan['table'][plan['row'][i:i + n, None], pos] = member[:n]
    for replay, plan in zip(self.replays, plans):
      self._write(replay, plan, T)
    self.last = {'replay/cache_seconds': time.perf_counter() - start,
                 'replay/cache_items': sum(len(p['ids']) for p in plans),
                 'replay/cache_batches': -(-longest // B)}

  def _plan(self, replay):
    """The windows to run for one replay and the table of its per-step
    values, indexed [chunk index, position in chunk]."""
    ids = replay.item_ids()
    if not len(ids):
      return None
    chunk, T = replay.chunksize, replay.length - self.context
    slots, first = np.unique(ids // chunk, return_index=True)
    counts = np.diff(np.append(first, len(ids)))  # items per chunk
    windows = self._windows(ids, first, counts, T)
    return dict(
        ids=ids, slots=slots, counts=counts, windows=windows,
        table=np.full((len(slots), chunk), np.nan, np.float64),
        row=np.searchsorted(slots, windows // chunk))

  def _write(self, replay, plan, T):
    # Each item's trained steps are a sliding window over its chunk's row.
    K, chunk = self.context, replay.chunksize
    for j, slot in enumerate(plan['slots']):
      n = plan['counts'][j]
      values = sliding_window_view(plan['table'][j, K:K + n + T - 1], T)
      stepid = slot * chunk + K + sliding_window_view(
          np.arange(n + T - 1), T)
      replay.prioritize(stepid, values)

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
