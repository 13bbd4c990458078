"""Training with separate evaluation envs: every run.eval_every seconds the
current policy plays run.eval_eps episodes in its own envs (eval mode, not
added to replay); scores are logged as eval_episode/*."""

import numpy as np

from embodied.core import Driver

from . import common
from .eval_only import RANGES  # noqa: F401 (its eval keys are ours too)
from .train import train


def train_eval(make_agent, make_replay, make_env, make_logger, args):
  should_eval = common.schedule(
      args.eval_every, args.get('deterministic', False))
  state = {}

  def evaluate(agent, members):
    if not should_eval(int(members.step)):
      return
    n, count = members.count, args.eval_envs
    if 'driver' not in state:
      state['driver'] = Driver(
          members.env_fns(make_env, 'eval', count),
          parallel=args.parallel_envs, max_restarts=args.env_max_restarts)
      state['episodes'] = [common.Episodes(logger, prefix='eval_episode')
                           for logger in members.loggers]
      state['videos'] = [common.PolicyVideo(
          args.get('video_every', 0), prefix='eval_policy')
          for _ in range(n)]

      def on_step(k, tran, worker):
        state['episodes'][k](tran, worker)
        state['videos'][k](tran, worker)
      state['driver'].on_step(members.route(on_step, count))
    driver = state['driver']
    driver.reset(members.init_policy)
    # Arms the recorders for this phase's first episode of eval env 0.
    for logger, video in zip(members.loggers, state['videos']):
      video.log(logger)
    common.play_episodes(driver, members.policy('eval'),
                         state['episodes'], args.eval_eps)
    stats = driver.stats()
    for logger, video in zip(members.loggers, state['videos']):
      video.log(logger)
      logger.add(stats, prefix='eval')
    scores = [e.mean_recent() for e in state['episodes']]
    print(f'Evaluation: mean score {np.mean(scores):.1f} over the last '
          f'{sum(len(e.recent) for e in state["episodes"])} episodes')

  try:
    train(make_agent, make_replay, make_env, make_logger, args,
          hooks=[evaluate])
  finally:
    if 'driver' in state:
      state['driver'].close()
