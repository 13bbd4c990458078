"""Samples-per-insert limiter for a replay that separate threads or
processes fill and sample concurrently (the `parallel` run script).

The single-process loop asks RatioLimiter how many updates to run after
each env step. With actors and a learner running side by side, nobody
takes turns: both sides call in and are held back instead.
"""

import threading
import time


class SamplesPerInsert:
  """Keeps sampled (replayed) steps S close to `ratio` times the inserted
  (env) steps I past the prefill, blocking whichever side runs ahead.

  With the deficit d = S - ratio * max(0, I - min_steps):
  - insert(n) is granted while I < min_steps (prefill), else only if the
    learner stays at most `tolerance` replayed steps behind afterwards:
    ratio * (I + n - min_steps) - S <= tolerance.
  - sample(n) is granted only once I >= min_steps and if the learner is at
    most `tolerance` steps ahead afterwards: S + n - ratio * (I - min_steps)
    <= tolerance.
  - Hence, once past the prefill, no granted call moves d outside
    [-tolerance, tolerance] (an insert that ends the prefill may start it
    below -tolerance; samples then catch up first).
  - No deadlock: if both an insert of n and a sample of b are refused, then
    ratio * n + b > 2 * tolerance; minimum(n, b) is the smallest tolerance
    that rules this out.
  - With a limit, inserts are refused once `limit` steps are in (the last
    granted one may pass it by up to n - 1).
  Counting and the optional `then` callback happen under one lock, so a
  caller can make the counters and its own data change together (the replay
  server adds the steps inside it), and snapshot(fn) sees both consistent.
  close() wakes every waiter; waits then return False.
  """

  def __init__(self, ratio, tolerance, min_steps=0, limit=None):
    if ratio <= 0:
      raise ValueError(f'ratio must be positive, got {ratio}.')
    if tolerance < 0:
      raise ValueError(f'tolerance must be non-negative, got {tolerance}.')
    self.ratio = float(ratio)
    self.tolerance = float(tolerance)
    self.min_steps = int(min_steps)
    self.limit = limit
    self.inserted = 0
    self.sampled = 0
    self.closed = False
    self._cond = threading.Condition()
    self._waits = {'insert': [0.0, 0], 'sample': [0.0, 0]}  # [seconds, calls]

  @staticmethod
  def minimum(ratio, insert_size, sample_size):
    """The smallest tolerance with which inserts of insert_size and samples
    of sample_size can never both be refused."""
    return (ratio * insert_size + sample_size) / 2

  def can_insert(self, n=1):
    if self.limit is not None and self.inserted >= self.limit:
      return False
    if self.inserted < self.min_steps:
      return True
    target = self.ratio * (self.inserted + n - self.min_steps)
    return target - self.sampled <= self.tolerance

  def can_sample(self, n):
    if self.inserted < self.min_steps:
      return False
    target = self.ratio * (self.inserted - self.min_steps)
    return self.sampled + n - target <= self.tolerance

  def insert(self, n=1, timeout=None, then=None):
    """Waits until inserting n steps is allowed (at most timeout seconds),
    counts them and runs then() under the lock. Returns (granted, result
    of then)."""
    return self._acquire('insert', n, timeout, then)

  def sample(self, n, timeout=None, then=None):
    """Like insert(), for a batch of n replayed steps."""
    return self._acquire('sample', n, timeout, then)

  def snapshot(self, fn=None):
    """Runs fn() under the lock (no insert or sample in between); returns
    (save(), fn's result)."""
    with self._cond:
      return self.save(), (fn() if fn else None)

  def close(self):
    with self._cond:
      self.closed = True
      self._cond.notify_all()

  def stats(self):
    """Counters and, since the last call, the mean seconds an insert or
    sample call waited."""
    with self._cond:
      out = {'inserted': self.inserted, 'sampled': self.sampled}
      for kind, (seconds, calls) in self._waits.items():
        if calls:
          out[f'{kind}_wait'] = seconds / calls
        self._waits[kind] = [0.0, 0]
      target = self.ratio * max(0, self.inserted - self.min_steps)
      out['deficit'] = self.sampled - target
      return out

  def save(self):
    return {'inserted': self.inserted, 'sampled': self.sampled}

  def load(self, data):
    with self._cond:
      self.inserted = int(data['inserted'])
      self.sampled = int(data['sampled'])
      self._cond.notify_all()

  def _acquire(self, kind, n, timeout, then):
    allowed = self.can_insert if kind == 'insert' else self.can_sample
    start = time.perf_counter()
    deadline = None if timeout is None else start + timeout
    with self._cond:
      while not self.closed and not allowed(n):
        left = None if deadline is None else deadline - time.perf_counter()
        if left is not None and left <= 0:
          break
        self._cond.wait(left)
      waited = self._waits[kind]
      waited[0] += time.perf_counter() - start
      waited[1] += 1
      if self.closed or not allowed(n):
        return False, None
      if kind == 'insert':
        self.inserted += n
      else:
        self.sampled += n
      result = then() if then else None
      # Either side's progress may unblock the other.
      self._cond.notify_all()
      return True, result
