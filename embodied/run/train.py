"""The train loop: step the envs, fill replay, train at the requested ratio,
log, checkpoint. Resumes from the logdir's latest checkpoint."""

import os
import time

import elements

from embodied.core.checkpoint import find as checkpoint_find
from embodied.core import Checkpoint, CheckpointError, Driver, EnvCrashError
from embodied.core import RatioLimiter
from embodied.core import Preempted, Preemption

from . import common
from .members import Members

# Config checks (dreamerv3/validate.py) of the run.* keys the loop reads.
RANGES = (
    (r'run\.steps', 'number', 1, None),
    (r'run\.envs', 'int', 1, None),
    (r'run\.(train_fill|env_max_restarts)', 'int', 0, None),
    (r'run\.(report_batch|report_length)', 'int', 1, None),
    (r'run\.train_ratio', 'number', 1e-9, None),
)


def check(config):
  source = config.run.from_checkpoint
  if source and checkpoint_find(os.path.expanduser(source)) is None:
    return missing_checkpoint(source)
  return None


def missing_checkpoint(source):
  return (f'run.from_checkpoint {source} holds no complete checkpoint: give '
          'a logdir, its ckpt/ folder, one checkpoint folder or the '
          'ckpt/latest file.')


def train(make_agent, make_replay, make_env, make_logger, args, hooks=()):
  """hooks: callables hook(agent, members) run once per loop iteration (the
  train_eval script uses one to run evaluation episodes). With run.seeds N
  the agent trains N members as one program (members.py)."""
  logdir = elements.Path(args.logdir)
  # Installed first: a stop signal while the agent compiles is kept too.
  preempt = Preemption()
  agent = make_agent()
  members = Members(agent, make_replay, make_logger, args.envs,
                    args.get('video_every', 0))
  step = members.step
  learner = common.Learner(
      agent, members.replay, args.batch_size, args.replay_context,
      args.get('prefetch', True))
  limiter = RatioLimiter(
      args.train_ratio, common.trained_steps(args),
      min_steps=common.fill_steps(args))

  driver = Driver(members.env_fns(make_env), parallel=args.parallel_envs,
                  max_restarts=args.env_max_restarts)
  # Each member's step counter, replay, episodes, extension host state
  # (e.g. an intrinsic reward schedule) and policy video see its envs.
  driver.on_step(members.route(members.on_step))

  # Two: a damaged newest one falls back to the one before.
  checkpoint = Checkpoint(logdir / 'ckpt', keep=2)
  checkpoint.register('agent', agent)
  checkpoint.register('limiter', limiter)
  members.register(checkpoint)
  resume(checkpoint, args.from_checkpoint)

  timer = Timers()
  by_steps = args.get('deterministic', False)
  should_log = common.schedule(args.log_every, by_steps)
  should_save = common.schedule(args.save_every, by_steps, first=False)
  should_report = common.schedule(args.report_every, by_steps, first=False) \
      if args.report_every else (lambda step: False)
  progress = common.Progress()
  aggs = [elements.Agg() for _ in range(members.count)]
  start = time.time()
  policy = members.policy('train')
  agree = agent.agree
  stopped_by = None
  driver.reset(members.init_policy)
  print(f'Start training at step {int(step):,} (until {int(args.steps):,}).')

  def add_train(metrics):
    for agg, mets in zip(aggs, members.split(metrics)):
      agg.add(mets, prefix='train')

  def finish():
    """Logs what is pending and saves, at the end or on an env crash."""
    progress.clear()
    add_train(learner.flush())
    stats = driver.stats()
    for logger, agg in zip(members.loggers, aggs):
      logger.add(agg.result())
      logger.add(stats)
      logger.write()
    checkpoint.save(int(step))
    for logger in members.loggers:
      logger.close()
    driver.close()

  try:
    while int(step) < args.steps:
      late = bool(args.duration and time.time() - start > args.duration)
      # With several processes (multi-host) all stop and save together, and
      # a stop signal to any of them ends each as preempted.
      signalled, late, save = agree(
          preempt.requested, late, should_save(int(step)))
      if signalled:
        stopped_by = preempt.signal or 'a stop signal to another process'
        print(f'Stopping on {stopped_by} at step {int(step):,}.')
        break
      if late:
        print(f'Stopping after run.duration={args.duration}s.')
        break
      with timer('env'):
        driver(policy, steps=args.envs * members.count)
      for _ in range(limiter(int(step))):
        with timer('train'):
          add_train(learner())
      progress(f'step {int(step):,} | updates {learner.updates:,} | '
               f'score {members.mean_score():.1f}')
      for hook in hooks:
        hook(agent, members)
      if should_report(int(step)) and len(members.replay):
        report = agent.report(learner.report_batch(
            args.get('report_batch', args.batch_size),
            args.get('report_length', args.batch_length)))
        for logger, agg, mets in zip(
            members.loggers, aggs, members.split(report)):
          common.log_report(logger, agg, mets)
      for logger, video in zip(members.loggers, members.videos):
        video.log(logger)
      if should_log(int(step)):
        progress.clear()
        rates = timer.rates(
            int(step), learner.updates, common.trained_steps(args))
        stats, learner_stats = driver.stats(), learner.stats()
        for logger, agg, replay in zip(
            members.loggers, aggs, members.replays):
          logger.add(agg.result())
          logger.add(rates)
          logger.add(replay.stats())
          logger.add(learner_stats)
          logger.add(stats)
          logger.add(peak_memory(), prefix='usage')
          logger.write()
      if save:
        add_train(learner.flush())
        checkpoint.save(int(step))
  except EnvCrashError:
    # An env that keeps failing ends the run; the checkpoint keeps the
    # progress, so the run resumes from here once the env is fixed.
    finish()
    raise
  finish()
  preempt.close()
  if stopped_by:
    raise Preempted(stopped_by, int(step))


def resume(checkpoint, from_checkpoint=''):
  """Continue this logdir's run, else initialise the agent from another
  run's checkpoint if asked, else start fresh. A logdir whose checkpoints
  are all damaged stops the run: starting from step 0 over it would bury
  them."""
  folder = checkpoint.latest()
  if folder:
    checkpoint.load(folder)
  elif checkpoint.complete():
    raise CheckpointError(
        f'No checkpoint in {checkpoint.directory} reads back intact (see the '
        'warnings above); the run stops instead of starting over: move the '
        'folder away to start fresh.')
  elif from_checkpoint:
    path = checkpoint_find(os.path.expanduser(from_checkpoint))
    if path is None:  # Removed since the config was checked.
      raise FileNotFoundError(missing_checkpoint(from_checkpoint))
    print(f'Initialising the agent from {path}')
    checkpoint.load(path, keys=['agent'])


class Timers:
  """Measures env and train throughput between log calls."""

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
      total = sum(self.time.values()) or 1.0
      out.update({f'fps/frac_{k}': v / total for k, v in self.time.items()})
    self.time = {k: 0.0 for k in self.time}
    self.last = (now, step, updates)
    return out


def peak_memory():
  import resource
  rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 ** 2
  return {'peak_rss_gb': rss}
