"""The per-step priority signal of prioritized replay.

Uncertainty-based prioritized replay and DreamerV3-XP weigh replayed items
by what the model still gets wrong. With `priority.signal` other than
none, every train step returns, for each trained step, one of
  uncertainty   the unclipped dynamics KL (the prior's surprise);
  model         dynamics + representation KL, both unclipped;
  recon         the reconstruction loss;
  value         |critic prediction - its replay lambda-return| (known for
                all but the last step, which repeats the one before).

How replay extensions plug in, end to end, all from this module:
  1. the device side fills the agent's `step_outputs` seam: the train step
     returns outs['priority'] = {'stepid', 'value'};
  2. its host side (PriorityWork, which the run loop's Learner runs after
     every train step) hands them to replay.prioritize();
  3. the `priority` sampler of the sampler registry
     (embodied/core/samplers.py, `replay.fracs.priority`, `replay.prio.*`)
     turns per-step values into item priorities and samples by them;
  4. with priority.cache_every N, the host side also recomputes every item's
     signal buffer-wide every N train steps (PriorityRefresh), from the
     agent's uncertainty() pass (posterior KLs, no decoder or imagination).
A new signal is one more entry in SIGNALS; a new way to sample is one more
sampler class in the registry. The extension is on when `priority.signal`
is not none or `priority.cache_every` is positive; the sampler's own keys
(`replay.fracs`, `replay.prio.*`, `replay.recexp`) belong to replay.
"""

import time

import jax
import jax.numpy as jnp
import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from embodied.core.replay import Stacked

from .extensions import Extension, HostWork

CONFIG = ('priority',)
DEFAULTS = """
# Per-step priority signal of prioritized replay (dreamerv3/priority.py),
# for the sampler that replay.fracs.priority weighs.
priority:
  # The train step's per-step signal: none | uncertainty (unclipped dyn KL)
  # | model (dyn + rep KL) | recon | value (|critic - lambda-return|).
  signal: none
  # Train steps between buffer-wide refreshes of every item's signal (0 =
  # never).
  cache_every: 0
"""
ALIASES = {
    'replay.priosignal': 'priority.signal',
    'replay.cache_every': 'priority.cache_every',
}
SIGNALS = {
    'uncertainty': lambda s: s['dyn_kl'],
    'model': lambda s: s['dyn_kl'] + s['rep_kl'],
    'recon': lambda s: s['recon'],
    'value': lambda s: s['value_error'],
}
CHOICES = {'priority.signal': ('none', *SIGNALS)}
RANGES = ((r'priority\.cache_every', 'int', 0, None),)


# Signals a refresh can recompute from the posterior pass alone.
REFRESHABLE = ('uncertainty', 'model')


class PrioritySignal(Extension):

  name = 'priority'

  def __init__(self, signal, cache_every, batch_size, context):
    """signal: priority.signal ('none': only refreshes, of the
    uncertainty)."""
    self.signal = signal
    self.cache_every = cache_every
    self.batch_size = batch_size
    self.context = context

  def step_outputs(self, signals):
    if self.signal == 'none':
      return None
    value = SIGNALS[self.signal](signals)
    return jax.lax.stop_gradient(value).astype(jnp.float32)

  def host_work(self, agent, replay, prepare):
    refresh = None
    if self.cache_every:
      signal = self.signal if self.signal in REFRESHABLE else 'uncertainty'
      refresh = PriorityRefresh(
          agent, replay, self.batch_size, self.cache_every, self.context,
          prepare, SIGNALS[signal])
    return PriorityWork(replay, refresh)


class PriorityWork(HostWork):
  """Writes each train step's signals into replay's priorities, and
  refreshes all of them every cache_every updates."""

  def __init__(self, replay, refresh=None):
    self.replay = replay
    self.refresh = refresh

  def outputs(self, outs):
    if 'priority' in outs:
      self.replay.prioritize(
          outs['priority']['stepid'], outs['priority']['value'])

  def updated(self, updates):
    if self.refresh:
      self.refresh(updates)

  def stats(self):
    return self.refresh.stats() if self.refresh else {}


def check(config):
  c = config.priority
  sampled = config.replay.fracs.get('priority', 0) > 0
  if sampled and c.signal == 'none' and not c.cache_every:
    return ('replay.fracs.priority > 0 needs priority.signal (or '
            'priority.cache_every): without one no priority is ever updated.')
  if c.cache_every and not sampled:
    return ('priority.cache_every refreshes priorities, which only matter '
            'with replay.fracs.priority > 0.')
  if c.cache_every and c.signal not in ('none', *REFRESHABLE):
    return (f'priority.cache_every recomputes the signal from the posterior '
            f'pass alone, which has no {c.signal} signal: use '
            f'priority.signal {" or ".join(REFRESHABLE)}')
  return None


def install(agent, config):
  c = config.priority
  if c.signal == 'none' and not c.cache_every:
    return None
  return PrioritySignal(
      c.signal, c.cache_every, agent.config.batch_size,
      agent.config.replay_context)


class PriorityRefresh:
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

  def __init__(self, agent, replay, batch_size, every, context,
               prepare=None, signal=None):
    """replay: one replay, or the Stacked replays of a multi-seed run's
    members (each refreshed from its own items; one model call per batch
    covers all members). context: replay context steps K at the start of
    each sequence, which the model reads but reports no signal for.
    prepare(batch) -> batch completes a replay batch for the agent (e.g.
    zero latents for keys no train step has written yet). signal(out) ->
    [B, T] picks the values from what agent.uncertainty() returns."""
    self.agent = agent
    self.stacked = isinstance(replay, Stacked)
    self.replays = replay.replays if self.stacked else [replay]
    self.batch_size = int(batch_size)
    self.every = int(every)
    self.context = int(context)
    self.prepare = prepare or (lambda batch: batch)
    self.signal = signal or (lambda out: out)
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
      values = np.asarray(
          self.signal(self.agent.uncertainty(data)), np.float64)
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
