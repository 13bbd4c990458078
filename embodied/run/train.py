"""The train loop: step the envs, fill replay, train at the requested ratio,
log, checkpoint. Resumes from the logdir's latest checkpoint."""

import os

import elements

from embodied.core.checkpoint import find as checkpoint_find
from embodied.core import Checkpoint, CheckpointError, Driver, EnvCrashError
from embodied.core import RatioLimiter
from embodied.core import Preempted, Preemption

from . import common
from .loop import Loop
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

  def log_stats():
    stats = driver.stats()
    return [{**replay.stats(), **stats} for replay in members.replays]

  loop = Loop(args, step, preempt, learner, members.loggers,
              save=lambda: checkpoint.save(int(step)), stats=log_stats,
              split=members.split, until=args.steps)
  policy = members.policy('train')
  driver.reset(members.init_policy)
  print(f'Start training at step {int(step):,} (until {int(args.steps):,}).')

  try:
    while loop.running():
      with loop.timer('env'):
        driver(policy, steps=args.envs * members.count)
      for _ in range(limiter(int(step))):
        with loop.timer('train'):
          loop.train()
      loop.progress(f'step {int(step):,} | updates {learner.updates:,} | '
                    f'score {members.mean_score():.1f}')
      for hook in hooks:
        hook(agent, members)
      for logger, video in zip(members.loggers, members.videos):
        video.log(logger)
      loop.tick(can_report=lambda: len(members.replay) > 0)
  except EnvCrashError:
    # An env that keeps failing ends the run; the checkpoint keeps the
    # progress, so the run resumes from here once the env is fixed.
    loop.finish()
    driver.close()
    raise
  loop.finish()
  driver.close()
  preempt.close()
  if loop.stopped_by:
    raise Preempted(loop.stopped_by, int(step))


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
