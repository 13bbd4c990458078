"""Raw env throughput with random actions, for any task: one env alone, then
N envs through the Driver in this process and in one subprocess each.
Prints figures; asserts nothing about time.

  python scripts/env_speed.py --configs atari100k --task atari100k_pong
  python scripts/env_speed.py --configs minatar --task minatar_breakout --envs 8
  python scripts/env_speed.py --task gym_CartPole-v1 --modes alone,parallel

Own options: --seconds S (timed seconds per mode, default 10), --envs N
(Driver envs, default 8), --modes alone,serial,parallel. Everything else
goes to the config parser (--configs, --task, --env.<suite>.<key>, ...), so
env options and env.size come from the same blocks a training run uses.
"""

import argparse
import functools
import pathlib
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from dreamerv3 import main as dmain  # noqa: E402
from embodied.core import Driver  # noqa: E402

MODES = ('alone', 'serial', 'parallel')


def random_actions(act_space, count, rng):
  """count random actions per act_space key (except reset), batched."""
  out = {}
  for key, space in act_space.items():
    if key == 'reset':
      continue
    shape = (count, *space.shape)
    if space.discrete:
      out[key] = rng.integers(space.low, space.high, shape).astype(space.dtype)
    else:
      out[key] = rng.uniform(space.low, space.high, shape).astype(space.dtype)
  return out


def alone(config, seconds, rng):
  env = dmain.make_env(config, 0)
  try:
    act_space = env.act_space  # Built once: Spaces are slow to create.
    env.step({'reset': True})
    steps, episodes = 0, 0
    start = time.perf_counter()
    while time.perf_counter() - start < seconds:
      acts = random_actions(act_space, 100, rng)
      for i in range(100):
        obs = env.step({**{k: v[i] for k, v in acts.items()}, 'reset': False})
        steps += 1
        if obs['is_last']:
          episodes += 1
          env.step({'reset': True})
    return steps / (time.perf_counter() - start), episodes
  finally:
    env.close()


def driven(config, seconds, envs, parallel, rng):
  fns = [functools.partial(dmain.make_env, config, i) for i in range(envs)]
  driver = Driver(fns, parallel=parallel)
  try:
    act_space = driver.act_space
    def policy(carry, obs):
      return carry, random_actions(act_space, envs, rng), {}
    driver.reset(lambda n: None)
    driver(policy, steps=envs * 10)  # Warm up: resets, first pipes.
    steps = 0
    start = time.perf_counter()
    while time.perf_counter() - start < seconds:
      driver(policy, steps=envs * 10)
      steps += envs * 10
    return steps / (time.perf_counter() - start)
  finally:
    driver.close()


def main(argv=None):
  parser = argparse.ArgumentParser(add_help=False)
  parser.add_argument('--seconds', type=float, default=10)
  parser.add_argument('--envs', type=int, default=8)
  parser.add_argument('--modes', default=','.join(MODES))
  args, rest = parser.parse_known_args(argv)
  modes = args.modes.split(',')
  for mode in modes:
    if mode not in MODES:
      raise SystemExit(f"Unknown mode '{mode}' in --modes: choose from "
                       f"{', '.join(MODES)}")
  config = dmain.parse(rest)
  suite = config.task.split('_', 1)[0]
  repeat = dict(config.env.get(suite, {})).get('repeat')
  env = dmain.make_env(config, 0)
  print(f'Task {config.task}: ' + ', '.join(
      f'{k} {v.dtype.name}{v.shape}' for k, v in env.obs_space.items()
      if k not in ('reward', 'is_first', 'is_last', 'is_terminal')))
  env.close()

  def show(name, rate, extra=''):
    frames = f' ({rate * repeat:,.0f} frames/s at repeat {repeat})' \
        if repeat else ''
    print(f'{name:<34} {rate:>10,.0f} steps/s{frames}{extra}')

  rng = np.random.default_rng(0)
  if 'alone' in modes:
    rate, episodes = alone(config, args.seconds, rng)
    show('1 env alone, no driver', rate, f', {episodes} episodes ended')
  if 'serial' in modes:
    rate = driven(config, args.seconds, args.envs, False, rng)
    show(f'Driver, {args.envs} envs in-process', rate)
  if 'parallel' in modes:
    rate = driven(config, args.seconds, args.envs, True, rng)
    show(f'Driver, {args.envs} envs in subprocesses', rate)


if __name__ == '__main__':
  main()
