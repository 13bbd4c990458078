"""Pieces shared by the run loops: schedules, the training start, episode
statistics, the train step glue between replay and agent, report and video
logging, and the live progress line (the logger outputs: outputs.py)."""

import collections
import sys
import time

import elements
import numpy as np

from embodied.core import video



def trained_steps(args):
  """Steps of one batch that count toward run.train_ratio: the trained
  ones, batch_size * batch_length, as in the reference DreamerV3 (the
  replay context only starts each sequence's latent state)."""
  return args.batch_size * args.batch_length


def fill_steps(args, envs=None):
  """Env steps (of one member, over its `envs` envs) before training starts.
  As the reference: until replay holds batch_size * batch_length sequence
  starts. Each env's stream holds its steps less the first length - 1 as
  starts, and the envs step together, so that is batch_size * batch_length
  + envs * (length - 1). run.train_fill, when set, replaces that count, but
  not below one complete sequence in every env (replay cannot sample
  before)."""
  envs = envs or args.envs
  length = args.batch_length + args.replay_context
  if args.train_fill:
    return max(int(args.train_fill), envs * length)
  return args.batch_size * args.batch_length + envs * (length - 1)


def schedule(every, by_steps, first=True):
  """A callable step -> bool for logging, saving, reporting or evaluating:
  every `every` seconds, or with by_steps (run.deterministic) every `every`
  agent steps, so that a rerun does each at the same steps however fast the
  machine runs. 0: at every call."""
  if by_steps:
    return elements.when.Every(every if every > 0 else -1, first)
  clock = elements.when.Clock(every, first)
  return lambda step: clock()


def play_episodes(driver, policy, episodes, count):
  """Steps the driver's envs until each member's Episodes tracker has
  counted `count` more episodes (a member with short episodes does not fill
  another's share)."""
  target = [e.count + count for e in episodes]
  while any(e.count < n for e, n in zip(episodes, target)):
    driver(policy, steps=1)


class Episodes:
  """Accumulates score and length per env worker; reports finished episodes
  to the logger (episode/*) and keeps recent scores for summaries."""

  def __init__(self, logger, prefix='episode', window=10):
    self.logger = logger
    self.prefix = prefix
    self.score = collections.defaultdict(float)
    self.length = collections.defaultdict(int)
    self.logs = collections.defaultdict(lambda: collections.defaultdict(list))
    self.recent = collections.deque(maxlen=window)
    self.count = 0

  def __call__(self, tran, worker):
    if tran['is_first']:
      self.score[worker] = 0.0
      self.length[worker] = 0
      self.logs.pop(worker, None)
    else:
      self.score[worker] += float(tran['reward'])
      self.length[worker] += 1
    for key, value in tran.items():
      if key.startswith('log/'):
        self.logs[worker][key[4:]].append(value)
    if tran['is_last']:
      score, length = self.score[worker], self.length[worker]
      self.recent.append(score)
      self.count += 1
      metrics = {'score': score, 'length': length}
      for key, values in self.logs.pop(worker, {}).items():
        # NaN marks a step without a value, so an env can report a figure
        # per episode on its last step only (e.g. Crafter's achievements).
        values = np.asarray(values, np.float64)
        values = values[~np.isnan(values)]
        if values.size:
          metrics[f'{key}_mean'] = float(np.mean(values))
      self.logger.add(metrics, prefix=self.prefix)

  def mean_recent(self):
    return float(np.mean(self.recent)) if self.recent else float('nan')


class Learner:
  """Samples a batch, runs one train step and writes the step's per-step
  latents back into replay; the agent's host work (agent.host_work: the
  extensions' host sides, e.g. writing priorities, periodic refreshes) gets
  every step's outputs and update count.

  With prefetch (the default), a call dispatches the train step on the
  batch prepared by the previous call and, while the device computes,
  writes back the previous step's outputs and samples and transfers the
  next batch. So the device never waits for sampling unless sampling takes
  longer than a step; the costs: the metrics returned are the previous
  step's (the first call returns {}), and a batch is sampled before the
  outputs of the step just dispatched reach replay (one step staler
  latents and priorities). flush() writes back what is outstanding (call
  it before saving replay).

  stats()['learner/wait_frac']: of the time spent in calls, the share the
  host was busy with replay work (sampling, transfers, write-back) rather
  than waiting for the device: near 0 means the device is the bottleneck,
  near 1 that the device waits on the host. With prefetching,
  'learner/dispatch_frac' is the share spent handing the next step to the
  device: kept apart because a GPU runtime may block there until the
  previous step is done, which is device time seen from the host."""

  def __init__(self, agent, replay, batch_size, context=0, prefetch=True):
    self.agent = agent
    self.replay = replay
    self.batch_size = batch_size
    self.ext_space = agent.ext_space
    self.context = context
    self.prefetch = prefetch
    self.updates = 0
    # The extensions' host sides: what to do with each step's outputs
    # (e.g. priorities) and periodic work (e.g. refreshes).
    self.work = agent.host_work(replay, self._complete)
    self._next = None      # The next batch, on its way to the devices.
    self._pending = None   # (outs, metrics) of the last step, on device.
    self._time = {'host': 0.0, 'device': 0.0, 'dispatch': 0.0}

  def batch(self, commit=True, size=None):
    """commit=False for batches that are not trained on (reports): replay
    keeps its sampler state and online queue as they are. size: another
    batch size than the train batch's."""
    return self._complete(
        self.replay.sample(size or self.batch_size, commit))

  def report_batch(self, size, length):
    """A report batch: `size` replay sequences (not trained on) cut to
    their context and first `length` steps (at most the whole sequence).
    The size is rounded up to a multiple of the agent's train devices,
    which each take an equal share."""
    mesh = self.agent.mesh
    devices = mesh.devices.size if mesh is not None else 1
    data = self.batch(commit=False, size=-(-size // devices) * devices)
    steps = min(self.context + length, data['stepid'].shape[1])
    return {k: v[:, :steps] for k, v in data.items()}

  def stats(self):
    stats = {}
    for work in self.work:
      stats.update(work.stats())
    total = sum(self._time.values())
    if total:
      stats['learner/wait_frac'] = self._time['host'] / total
      if self.prefetch:
        stats['learner/dispatch_frac'] = self._time['dispatch'] / total
    self._time = {k: 0.0 for k in self._time}
    return stats

  def _complete(self, data):
    shape = data['stepid'].shape
    for key, space in self.ext_space.items():
      if key not in data:  # Not written by any train step yet.
        data[key] = np.zeros((*shape, *space.shape), space.dtype)
    return data

  def __call__(self):
    if not self.prefetch:
      start = time.perf_counter()
      data = self.batch()
      host = time.perf_counter() - start
      outs, metrics = self.agent.train(data)
      device = time.perf_counter() - start - host
      self._write_back(outs)
      self._time['host'] += time.perf_counter() - start - device
      self._time['device'] += device
      return self._step_done(metrics)
    start = time.perf_counter()
    if self._next is None:
      self._next = self.agent.put(self.batch())
    dispatch = time.perf_counter()
    pending = self.agent.train_async(self._next)
    dispatch = time.perf_counter() - dispatch
    self._time['dispatch'] += dispatch
    self._next = None
    metrics = {}
    if self._pending is not None:
      metrics = self._finish(self._pending)
    self._pending = pending
    self._next = self.agent.put(self.batch())
    self._time['host'] += time.perf_counter() - start - dispatch
    return self._step_done(metrics)

  def flush(self):
    """Writes back the outputs of the step still outstanding; returns its
    metrics ({} when none)."""
    if self._pending is None:
      return {}
    pending, self._pending = self._pending, None
    start = time.perf_counter()
    metrics = self._finish(pending)
    self._time['host'] += time.perf_counter() - start
    return metrics

  def _finish(self, pending):
    # Waiting for the step's outputs is device time, not host time.
    start = time.perf_counter()
    outs, metrics = self.agent.fetch(pending)
    waited = time.perf_counter() - start
    self._time['device'] += waited
    self._time['host'] -= waited
    self._write_back(outs)
    return metrics

  def _write_back(self, outs):
    if 'replay' in outs:
      values = dict(outs['replay'])
      self.replay.update(values.pop('stepid'), values)
    for work in self.work:
      work.outputs(outs)

  def _step_done(self, metrics):
    self.updates += 1
    for work in self.work:
      work.updated(self.updates)
    return metrics


def log_report(logger, agg, metrics):
  """Report outputs: scalars go to agg (averaged until the next log),
  open-loop videos ([T, 3H, B*W, C]) straight to the logger, rendered."""
  for key, value in metrics.items():
    if np.ndim(value) == 4:
      cell = (value.shape[1] // 3, value.shape[1] // 3)
      logger.add({f'report/{key}': video.render(value, cell=cell)})
    else:
      agg.add({key: value}, prefix='report')


class PolicyVideo:
  """Driver callback: every `every` seconds (0 = never) records the next
  whole episode of env worker 0 and, on log(), adds it as PREFIX/KEY per
  image key. Tasks without images log nothing."""

  def __init__(self, every, prefix='policy', max_frames=1000):
    self.prefix = prefix
    self.clock = elements.when.Clock(every) if every else None
    self.recorder = video.EpisodeRecorder(0, max_frames)

  def __call__(self, tran, worker):
    if self.clock:
      self.recorder(tran, worker)

  def log(self, logger):
    if not self.clock:
      return
    result = self.recorder.done()
    if result:
      logger.add({f'{self.prefix}/{k}': video.render(v)
                  for k, v in result.items()})
    if self.clock():
      self.recorder.arm()


class Progress:
  """A live one-line status on interactive terminals (skipped in log files)."""

  def __init__(self, every=1.0):
    self.enabled = sys.stdout.isatty()
    self.clock = elements.when.Clock(every)
    self.shown = False

  def __call__(self, text):
    if self.enabled and self.clock():
      print('\r' + text[:150].ljust(150), end='', flush=True)
      self.shown = True

  def clear(self):
    if self.shown:
      print('\r' + ' ' * 150 + '\r', end='', flush=True)
      self.shown = False
