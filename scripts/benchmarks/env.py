"""Raw env throughput with random actions, for any task: one env alone, then
--bench.envs envs through the Driver in this process and in one subprocess
each. Env options and env.size come from the config flags, as in a run
(--configs, --task, --env.<suite>.<key>, ...). With an action repeat,
frames/s are given too.

  python scripts/bench.py env --configs atari100k --task atari100k_pong
  python scripts/bench.py env --configs minatar --task minatar_breakout \\
      --bench.envs 8
  python scripts/bench.py env --task gym_CartPole-v1 \\
      --bench.modes alone,parallel
"""

import functools
import time

import numpy as np

from scripts.benchmarks import common

MODES = ('alone', 'serial', 'parallel')
OPTIONS = {
    'seconds': (10.0, 'timed seconds per mode'),
    'envs': (8, 'envs in the Driver'),
    'modes': (','.join(MODES), 'alone (1 env, no Driver), serial (Driver, '
              'in-process), parallel (Driver, subprocesses)'),
}


def run(options, flags):
  modes = options['modes'].split(',')
  for mode in modes:
    if mode not in MODES:
      raise SystemExit(f"Unknown mode '{mode}' in --bench.modes: choose "
                       f"from {', '.join(MODES)}")
  config = common.parse_config(flags)
  suite = config.task.split('_', 1)[0]
  repeat = dict(config.env.get(suite, {})).get('repeat')
  obs_space, _ = common.spaces(config)
  results = {'task': config.task, 'obs': ', '.join(
      f'{k} {v.dtype.name}{v.shape}' for k, v in obs_space.items()
      if k not in ('reward', 'is_first', 'is_last', 'is_terminal'))}
  rng = np.random.default_rng(0)
  seconds, envs = options['seconds'], options['envs']
  rates = {}
  if 'alone' in modes:
    rates['alone'], results['episodes[alone]'] = alone(config, seconds, rng)
  if 'serial' in modes:
    rates['serial'] = driven(config, seconds, envs, False, rng)
  if 'parallel' in modes:
    rates['parallel'] = driven(config, seconds, envs, True, rng)
  for mode, rate in rates.items():
    results[f'steps_per_s[{mode}]'] = rate
    if repeat:
      results[f'frames_per_s[{mode}]'] = rate * repeat
  return results


def alone(config, seconds, rng):
  """(steps/s, episodes ended) of one env stepped directly."""
  from dreamerv3 import main as dmain
  env = dmain.make_env(config, 0)
  try:
    act_space = env.act_space  # Built once: Spaces are slow to create.
    env.step({'reset': True})
    steps, episodes = 0, 0
    start = time.perf_counter()
    while time.perf_counter() - start < seconds:
      acts = common.random_actions(act_space, 100, rng)
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
  """Steps/s of `envs` envs through the Driver."""
  import embodied
  from dreamerv3 import main as dmain
  fns = [functools.partial(dmain.make_env, config, i) for i in range(envs)]
  driver = embodied.Driver(fns, parallel=parallel)
  try:
    act_space = driver.act_space
    def policy(carry, obs):
      return carry, common.random_actions(act_space, envs, rng), {}
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
