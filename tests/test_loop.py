"""The loop skeleton (embodied/run/loop.py) with fakes around it: at which
steps it reports, logs and saves, why it stops, and its last log line and
checkpoint."""

import elements
import pytest

from embodied.run import loop as loop_module
from embodied.run.loop import Loop


class Agent:

  def __init__(self, others_signalled=False):
    self.others_signalled = others_signalled
    self.agreed = []

  def agree(self, signalled, late, save):
    self.agreed.append((signalled, late, save))
    return signalled or self.others_signalled, late, save

  def report(self, data):
    return {'loss': 1.0}


class Learner:
  """Each call is one update; its metrics arrive one call later, as with
  prefetching (flush() hands over the outstanding ones)."""

  def __init__(self, agent):
    self.agent = agent
    self.updates = 0
    self.pending = False

  def __call__(self):
    metrics = self.flush()
    self.updates += 1
    self.pending = True
    return metrics

  def flush(self):
    if not self.pending:
      return {}
    self.pending = False
    return {f'update{self.updates}': 1}

  def report_batch(self, size, length):
    return {}

  def stats(self):
    return {'learner/x': 1}


class Logger:

  def __init__(self, step):
    self.step = step
    self.pending = {}
    self.lines = []
    self.closed = False

  def add(self, metrics, prefix=None):
    for key, value in metrics.items():
      self.pending[f'{prefix}/{key}' if prefix else key] = value

  def write(self):
    self.lines.append((int(self.step), self.pending))
    self.pending = {}

  def close(self):
    self.closed = True


class Preempt:
  requested = False
  signal = None


def make(agent=None, until=None, **run):
  args = elements.Config({
      'log_every': 3, 'save_every': 5, 'report_every': 4,
      'deterministic': True, 'duration': 0, 'batch_size': 2,
      'batch_length': 4, **run})
  step = elements.Counter()
  preempt = Preempt()
  learner = Learner(agent or Agent())
  logger = Logger(step)
  saves = []
  loop = Loop(args, step, preempt, learner, [logger],
              save=lambda: saves.append(int(step)),
              stats=lambda: [{'extra': int(step)}], until=until)
  return loop, step, preempt, logger, saves


def run(loop, step, on_step=lambda step: None):
  while loop.running():
    step.increment()
    on_step(int(step))
    loop.train()
    loop.tick()
  loop.finish()


def test_deterministic_schedules_count_agent_steps():
  loop, step, _, logger, saves = make(until=12)
  run(loop, step)
  assert int(step) == 12 and loop.stopped_by is None
  # A save is decided as an iteration starts (steps 5 and 10) and written
  # as it ends, after that iteration's env step; the last one at the end.
  assert saves == [6, 11, 12]
  # Logs from the first step on, every 3 steps, then the final line.
  assert [s for s, _ in logger.lines] == [1, 3, 6, 9, 12, 12]
  reports = [s for s, line in logger.lines if 'report/loss' in line]
  assert reports == [6, 9, 12]  # Reported at 4, 8, 12: logged next.
  for _, line in logger.lines:
    assert line['extra'] is not None and line['learner/x'] == 1
    assert 'usage/peak_rss_gb' in line
  assert logger.closed


def test_every_update_reaches_a_log_line():
  loop, step, _, logger, _ = make(until=7)
  run(loop, step)
  keys = set().union(*(line for _, line in logger.lines))
  assert {f'train/update{n}' for n in range(1, 8)} <= keys
  # The update still outstanding at the end is flushed into the last line.
  assert 'train/update7' in logger.lines[-1][1]


def test_a_stop_signal_ends_the_run_and_saves():
  loop, step, preempt, logger, saves = make(until=100)

  def on_step(s):
    if s == 7:
      preempt.requested, preempt.signal = True, 'SIGUSR1'
  run(loop, step, on_step)
  assert int(step) == 7 and loop.stopped_by == 'SIGUSR1'
  assert saves == [6, 7] and logger.lines[-1][0] == 7 and logger.closed


def test_a_stop_signal_to_another_process_stops_this_one():
  agent = Agent(others_signalled=True)
  loop, step, _, _, saves = make(agent, until=100)
  run(loop, step)
  assert int(step) == 0 and saves == [0]
  assert loop.stopped_by == 'a stop signal to another process'
  # Every process puts its stop, duration and save flags to the vote.
  assert agent.agreed == [(False, False, False)]


def test_duration_stops_the_run(monkeypatch):
  now = [1000.0]
  monkeypatch.setattr(loop_module.time, 'time', lambda: now[0])
  loop, step, _, _, saves = make(until=100, duration=60)

  def on_step(s):
    now[0] += 25  # Past 60 seconds after the third step.
  run(loop, step, on_step)
  assert int(step) == 3 and loop.stopped_by is None and saves == [3]


@pytest.mark.parametrize('timed', [False, True])
def test_time_fractions_only_where_the_script_times(timed):
  loop, step, _, logger, _ = make(until=7)
  while loop.running():
    with loop.timer('env') if timed else _Nothing():
      step.increment()
    loop.train()
    loop.tick()
  loop.finish()
  keys = set().union(*(line for _, line in logger.lines[1:]))
  assert {'fps/env', 'fps/train', 'fps/replayed'} <= keys
  assert ('fps/frac_env' in keys) == timed


class _Nothing:
  def __enter__(self):
    pass

  def __exit__(self, *_):
    pass
