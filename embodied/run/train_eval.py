"""Training with separate evaluation envs: every run.eval_every seconds the
current policy plays run.eval_eps episodes in its own envs (eval mode, not
added to replay); scores are logged as eval_episode/*."""

import functools

import elements

from embodied.core import Driver

from . import common
from .eval_only import RANGES  # noqa: F401 (its eval keys are ours too)
from .train import train


def train_eval(make_agent, make_replay, make_env, make_logger, args):
  should_eval = elements.when.Clock(args.eval_every)
  state = {}

  def evaluate(agent, logger):
    if not should_eval():
      return
    if 'driver' not in state:
      fns = [functools.partial(make_env, i, role='eval')
             for i in range(args.eval_envs)]
      state['driver'] = Driver(fns, parallel=args.parallel_envs,
                               max_restarts=args.env_max_restarts)
      state['episodes'] = common.Episodes(logger, prefix='eval_episode')
      state['driver'].on_step(state['episodes'])
      state['video'] = common.PolicyVideo(
          args.get('video_every', 0), prefix='eval_policy')
      state['driver'].on_step(state['video'])
    driver, episodes = state['driver'], state['episodes']
    driver.reset(agent.init_policy)
    policy = lambda carry, obs: agent.policy(carry, obs, mode='eval')
    # Arms the recorder for this phase's first episode of eval env 0.
    state['video'].log(logger)
    driver(policy, episodes=args.eval_eps)
    state['video'].log(logger)
    logger.add(driver.stats(), prefix='eval')
    print(f'Evaluation: mean score {episodes.mean_recent():.1f} over the '
          f'last {len(episodes.recent)} episodes')

  try:
    train(make_agent, make_replay, make_env, make_logger, args,
          hooks=[evaluate])
  finally:
    if 'driver' in state:
      state['driver'].close()
