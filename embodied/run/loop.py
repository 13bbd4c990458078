"""The skeleton of the training loops (scripts train, train_eval and
parallel): when a run stops, reports, logs and saves, what every log line
holds, and the last log line and checkpoint. A script says only how it
steps its envs or gets updates, what its log lines add and how it saves:

  while loop.running():  # run.steps, run.duration, a stop signal
    ...                  # step envs; loop.train() for each update
    loop.tick()          # report, log and save when their schedules say
  loop.finish()          # the last log line and checkpoint

Schedules count seconds, or with run.deterministic agent steps, so that a
rerun reports, logs and saves at the same steps however fast it runs. A
save is decided when an iteration starts and written when it ends."""

import resource
import time

import elements

from . import common


class Loop:

  def __init__(self, args, step, preempt, learner, loggers, save, stats,
               split=lambda metrics: [metrics], until=None):
    """step: the run's step counter. preempt: the core.Preemption, installed
    before the agent was built (a signal while it compiles counts).
    learner: the common.Learner; its agent reports and agrees on stops.
    loggers: one per member; split(metrics): the metrics of each. save():
    writes a checkpoint. stats(): what each member's log line adds, one
    dict per logger. until: the step count that ends the run (None: the
    script ends the loop itself)."""
    self.args = args
    self.step = step
    self.preempt = preempt
    self.learner = learner
    self.agent = learner.agent
    self.loggers = loggers
    self.write_checkpoint = save
    self.stats = stats
    self.split = split
    self.until = until
    by_steps = args.get('deterministic', False)
    self.should_log = common.schedule(args.log_every, by_steps)
    self.should_save = common.schedule(args.save_every, by_steps, first=False)
    self.should_report = common.schedule(
        args.report_every, by_steps, first=False) \
        if args.report_every else (lambda step: False)
    self.aggs = [elements.Agg() for _ in loggers]
    self.timer = Timers()
    self.progress = common.Progress()
    self.start = time.time()
    self.save_due = False
    self.stopped_by = None  # The stop signal that ended the run, if any.

  def running(self):
    """Whether to run another iteration; decides whether it ends with a
    save. With several processes (multi-host) all stop and save together,
    and a stop signal to any of them ends each as preempted."""
    step = int(self.step)
    if self.until is not None and step >= self.until:
      return False
    duration = self.args.duration
    late = bool(duration and time.time() - self.start > duration)
    signalled, late, self.save_due = self.agent.agree(
        self.preempt.requested, late, self.should_save(step))
    if signalled:
      self.stopped_by = (
          self.preempt.signal or 'a stop signal to another process')
      print(f'Stopping on {self.stopped_by} at step {step:,}.')
      return False
    if late:
      print(f'Stopping after run.duration={duration}s.')
      return False
    return True

  def train(self):
    """One update; its metrics go into the next log line."""
    self._add_train(self.learner())

  def tick(self, can_report=lambda: True):
    """The end of an iteration. can_report(): asked when a report is due
    (False while replay cannot sample yet)."""
    step = int(self.step)
    if self.should_report(step) and can_report():
      self.report()
    if self.should_log(step):
      self.log()
    if self.save_due:
      self.save()

  def report(self):
    args = self.args
    metrics = self.agent.report(self.learner.report_batch(
        args.get('report_batch', args.batch_size),
        args.get('report_length', args.batch_length)))
    for logger, agg, mets in zip(
        self.loggers, self.aggs, self.split(metrics)):
      common.log_report(logger, agg, mets)

  def log(self):
    self.progress.clear()
    rates = self.timer.rates(int(self.step), self.learner.updates,
                             common.trained_steps(self.args))
    stats = self.stats()
    learner = self.learner.stats()
    for logger, agg, extra in zip(self.loggers, self.aggs, stats):
      logger.add(agg.result())
      logger.add(rates)
      logger.add(extra)
      logger.add(learner)
      logger.add(peak_memory(), prefix='usage')
      logger.write()

  def save(self):
    # A prefetching Learner first writes back its outstanding step, so the
    # saved replay holds its outputs.
    self._add_train(self.learner.flush())
    self.write_checkpoint()

  def finish(self):
    """The last log line and checkpoint, and the loggers closed: at the
    end of the run, and when an env crash ends it (a resume continues
    from there)."""
    self._add_train(self.learner.flush())
    self.log()
    self.save()
    for logger in self.loggers:
      logger.close()

  def _add_train(self, metrics):
    for agg, mets in zip(self.aggs, self.split(metrics)):
      agg.add(mets, prefix='train')


class Timers:
  """Env and train throughput between log calls (fps/*), and the share of
  the timed sections in the loop's time (fps/frac_*, where it times any)."""

  def __init__(self):
    self.time = {'env': 0.0, 'train': 0.0}
    self.last = None

  def __call__(self, name):
    timers = self

    class Section:
      def __enter__(self):
        self.start = time.perf_counter()

      def __exit__(self, *_):
        timers.time[name] += time.perf_counter() - self.start
    return Section()

  def rates(self, step, updates, batch_steps):
    now = time.perf_counter()
    out = {}
    if self.last:
      prev_time, prev_step, prev_updates = self.last
      dt = max(now - prev_time, 1e-9)
      out['fps/env'] = (step - prev_step) / dt
      out['fps/train'] = (updates - prev_updates) / dt
      out['fps/replayed'] = out['fps/train'] * batch_steps
      total = sum(self.time.values())
      if total:
        out.update({f'fps/frac_{k}': v / total for k, v in self.time.items()})
    self.time = {k: 0.0 for k in self.time}
    self.last = (now, step, updates)
    return out


def peak_memory():
  rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 ** 2
  return {'peak_rss_gb': rss}
