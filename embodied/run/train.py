"""The train loop: step the envs, fill replay, train at the requested ratio,
log, checkpoint. Resumes from the logdir's latest checkpoint."""

import functools
import os
import time

import elements

from embodied.core.checkpoint import find as checkpoint_find
from embodied.core import Checkpoint, Driver, EnvCrashError, RatioLimiter
from embodied.core import Preempted, Preemption

from . import common

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
  """hooks: callables hook(agent, logger) run once per loop iteration (the
  train_eval script uses one to run evaluation episodes)."""
  logdir = elements.Path(args.logdir)
  # Installed first: a stop signal while the agent compiles is kept too.
  preempt = Preemption()
  agent = make_agent()
  replay = make_replay('replay')
  logger = make_logger()
  step = logger.step
  episodes = common.Episodes(logger)
  learner = common.Learner(
      agent, replay, args.batch_size, args.get('cache_every', 0),
      args.replay_context, args.get('prefetch', True))
  limiter = RatioLimiter(
      args.train_ratio, common.trained_steps(args),
      min_steps=args.train_fill or common.sampled_steps(args))

  fns = [functools.partial(make_env, i) for i in range(args.envs)]
  driver = Driver(fns, parallel=args.parallel_envs,
                  max_restarts=args.env_max_restarts)
  driver.on_step(lambda tran, worker: step.increment())
  driver.on_step(replay.add)
  driver.on_step(episodes)
  # Host state of the agent's extensions (e.g. an intrinsic reward
  # schedule): sees every env step, saved with the run.
  host = getattr(agent, 'host', None)
  if host:
    driver.on_step(host.on_step)
  policy_video = common.PolicyVideo(args.get('video_every', 0))
  driver.on_step(policy_video)

  checkpoint = Checkpoint(logdir / 'ckpt')
  checkpoint.register('step', step)
  checkpoint.register('agent', agent)
  checkpoint.register('replay', replay)
  checkpoint.register('limiter', limiter)
  if host:
    checkpoint.register('host', host)
  resume(checkpoint, args.from_checkpoint)

  timer = Timers()
  should_log = elements.when.Clock(args.log_every)
  should_save = elements.when.Clock(args.save_every, first=False)
  should_report = elements.when.Clock(args.report_every, first=False) \
      if args.report_every else (lambda: False)
  progress = common.Progress()
  agg = elements.Agg()
  start = time.time()
  policy = lambda carry, obs: agent.policy(carry, obs, mode='train')
  agree = getattr(agent, 'agree', lambda *flags: flags)
  stopped_by = None
  driver.reset(agent.init_policy)
  print(f'Start training at step {int(step):,} (until {int(args.steps):,}).')

  def finish():
    """Logs what is pending and saves, at the end or on an env crash."""
    progress.clear()
    agg.add(learner.flush(), prefix='train')
    logger.add(agg.result())
    logger.add(driver.stats())
    logger.write()
    checkpoint.save(int(step))
    logger.close()
    driver.close()

  try:
    while int(step) < args.steps:
      late = bool(args.duration and time.time() - start > args.duration)
      # With several processes (multi-host) all stop and save together, and
      # a stop signal to any of them ends each as preempted.
      signalled, late, save = agree(preempt.requested, late, should_save())
      if signalled:
        stopped_by = preempt.signal or 'a stop signal to another process'
        print(f'Stopping on {stopped_by} at step {int(step):,}.')
        break
      if late:
        print(f'Stopping after run.duration={args.duration}s.')
        break
      with timer('env'):
        driver(policy, steps=args.envs)
      for _ in range(limiter(int(step))):
        with timer('train'):
          agg.add(learner(), prefix='train')
      progress(f'step {int(step):,} | updates {learner.updates:,} | '
               f'score {episodes.mean_recent():.1f}')
      for hook in hooks:
        hook(agent, logger)
      if should_report() and len(replay):
        common.log_report(logger, agg, agent.report(learner.report_batch(
            args.get('report_batch', args.batch_size),
            args.get('report_length', args.batch_length))))
      policy_video.log(logger)
      if should_log(int(step)):
        progress.clear()
        logger.add(agg.result())
        logger.add(
            timer.rates(int(step), learner.updates, common.trained_steps(args)))
        logger.add(replay.stats())
        logger.add(learner.stats())
        logger.add(driver.stats())
        logger.add(peak_memory(), prefix='usage')
        logger.write()
      if save:
        agg.add(learner.flush(), prefix='train')
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
  run's checkpoint if asked, else start fresh."""
  if checkpoint.latest():
    checkpoint.load()
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
