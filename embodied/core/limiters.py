"""Balances training against data collection."""


class RatioLimiter:
  """Decides how many train updates to run so replayed steps / env steps ~= ratio.

  The update budget is recomputed from the totals on every call instead of
  accumulating float increments, so fractional credit carries over without
  drift. Credit starts counting at min_steps, so crossing the prefill
  threshold does not trigger a burst of catch-up updates.
  """

  def __init__(self, ratio, batch_steps, min_steps=1):
    if ratio < 0:
      raise ValueError(f'Train ratio must be non-negative, got {ratio}.')
    if batch_steps <= 0:
      raise ValueError(f'batch_steps must be positive, got {batch_steps}.')
    self.ratio = float(ratio)
    self.batch_steps = int(batch_steps)
    self.min_steps = int(min_steps)
    self._updates = 0  # Updates granted so far.

  def __call__(self, env_steps):
    env_steps = int(env_steps)
    if env_steps < self.min_steps:
      return 0
    steps = env_steps - self.min_steps
    target = int(steps * self.ratio // self.batch_steps)
    # A smaller target (e.g. env counter restored from an older checkpoint)
    # simply grants nothing until the env catches up again.
    todo = max(0, target - self._updates)
    self._updates += todo
    return todo

  def save(self):
    return {'updates': self._updates}

  def load(self, data):
    self._updates = int(data['updates'])
