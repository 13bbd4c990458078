"""Load a trained agent and run its policy: logs eval_episode/* scores."""

import elements

from embodied.core import Checkpoint, Driver

from . import common
from .members import Members
from .train import resume

# Config checks (dreamerv3/validate.py) of the eval keys.
RANGES = ((r'run\.(eval_envs|eval_eps)', 'int', 1, None),)


def eval_only(make_agent, make_replay, make_env, make_logger, args):
  agent = make_agent()
  members = Members(agent, None, make_logger, args.eval_envs)
  checkpoint = Checkpoint(elements.Path(args.logdir) / 'ckpt')
  checkpoint.register('agent', agent)
  members.register(checkpoint)  # Steps and host states, no replay.
  if args.from_checkpoint:
    resume(checkpoint, args.from_checkpoint)
  elif checkpoint.latest():
    checkpoint.load()
  else:
    raise FileNotFoundError(
        f'eval_only found no checkpoint in {args.logdir}/ckpt; pass '
        '--run.from_checkpoint with a logdir or checkpoint folder.')
  n = members.count
  episodes = [common.Episodes(logger, prefix='eval_episode',
                              window=args.eval_eps)
              for logger in members.loggers]
  driver = Driver(members.env_fns(make_env, 'eval'),
                  parallel=args.parallel_envs,
                  max_restarts=args.env_max_restarts)
  driver.on_step(members.route(lambda k, tran, w: episodes[k](tran, w)))
  driver.reset(members.init_policy)
  common.play_episodes(driver, members.policy('eval'), episodes,
                       args.eval_eps)
  stats = driver.stats()
  for logger, eps in zip(members.loggers, episodes):
    logger.add({'score_mean': eps.mean_recent(), 'episodes': eps.count},
               prefix='eval')
    logger.add(stats, prefix='eval')
    logger.write()
    logger.close()
  driver.close()
  for k, eps in enumerate(episodes):
    print(f'Evaluated {eps.count} episodes' + (f' of member {k}' if n > 1
                                               else '') +
          f': mean score {eps.mean_recent():.2f}')
