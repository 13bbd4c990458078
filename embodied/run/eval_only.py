"""Load a trained agent and run its policy: logs eval_episode/* scores."""

import functools

import elements

from embodied.core import Checkpoint, Driver

from . import common
from .train import resume

# Config checks (dreamerv3/validate.py) of the eval keys.
RANGES = ((r'run\.(eval_envs|eval_eps)', 'int', 1, None),)


def eval_only(make_agent, make_replay, make_env, make_logger, args):
  agent = make_agent()
  logger = make_logger()
  checkpoint = Checkpoint(elements.Path(args.logdir) / 'ckpt')
  checkpoint.register('agent', agent)
  checkpoint.register('step', logger.step)
  if args.from_checkpoint:
    resume(checkpoint, args.from_checkpoint)
  elif checkpoint.latest():
    checkpoint.load(keys=['agent', 'step'])
  else:
    raise FileNotFoundError(
        f'eval_only found no checkpoint in {args.logdir}/ckpt; pass '
        '--run.from_checkpoint with a logdir or checkpoint folder.')
  episodes = common.Episodes(logger, prefix='eval_episode',
                             window=args.eval_eps)
  fns = [functools.partial(make_env, i, role='eval')
         for i in range(args.eval_envs)]
  driver = Driver(fns, parallel=args.parallel_envs,
                  max_restarts=args.env_max_restarts)
  driver.on_step(episodes)
  driver.reset(agent.init_policy)
  policy = lambda carry, obs: agent.policy(carry, obs, mode='eval')
  driver(policy, episodes=args.eval_eps)
  logger.add({'score_mean': episodes.mean_recent(),
              'episodes': episodes.count}, prefix='eval')
  logger.add(driver.stats(), prefix='eval')
  logger.write()
  logger.close()
  driver.close()
  print(f'Evaluated {episodes.count} episodes: mean score '
        f'{episodes.mean_recent():.2f}')
