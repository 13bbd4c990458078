"""Overhead of a config variant on the train loop, measured A/B in one process.

  python scripts/bench_ab.py --base "--configs size1m --task dummy_image" \
      --variant "--configs size1m uncertainty --task dummy_image"
  python scripts/bench_ab.py --base "--configs size12m --task dummy_image" \
      --variant "--configs size12m --task dummy_image \
      --dynamics.masked_loss True" --rounds 4

Builds one agent, replay and learner per config, fills both replays with
the same random env steps, then alternates train updates (sample from
replay, train step, write latents and priorities back) between the two, so
that machine noise hits both alike. Prints the median wall and CPU seconds
per update of each (CPU time is the steadier figure on a VM with steal
time) and the variant's ratios to the base. Asserts nothing about time.
"""

import argparse
import functools
import json
import pathlib
import shlex
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

import embodied  # noqa: E402
from dreamerv3 import main as dmain  # noqa: E402
from embodied.run.common import Learner  # noqa: E402
from scripts.timing import time_calls  # noqa: E402


def build(argv, steps, seed=0):
  config = dmain.parse(shlex.split(argv)).update(logdir='/tmp/bench_unused')
  make_env = functools.partial(dmain.make_env, config)
  driver = embodied.Driver([functools.partial(make_env, i) for i in range(4)])
  replay = dmain.make_replay(config, 'replay', directory=False)
  driver.on_step(replay.add)
  env = make_env(0)
  obs_space, act_space = env.obs_space, env.act_space
  env.close()
  rng = np.random.default_rng(seed)

  def policy(carry, obs):
    n = len(obs['is_first'])
    act = {k: rng.integers(s.low, s.high, (n, *s.shape)).astype(s.dtype)
           if s.discrete else
           rng.uniform(-1, 1, (n, *s.shape)).astype(s.dtype)
           for k, s in act_space.items() if k != 'reset'}
    return carry, act, {}
  driver.reset(lambda n: None)
  driver(policy, steps=steps)
  driver.close()
  agent = dmain.make_agent(config, obs_space, act_space)
  # Synchronous updates: with prefetching, a call returns before its step
  # is done, and alternating two learners would blur which one is timed.
  learner = Learner(agent, replay, config.batch_size,
                    config.replay.cache_every, config.replay_context,
                    prefetch=False)
  return learner


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--base', required=True)
  parser.add_argument('--variant', required=True)
  parser.add_argument('--rounds', type=int, default=10)
  parser.add_argument('--warmup', type=int, default=2)
  parser.add_argument('--steps', type=int, default=4000,
                      help='random env steps put into each replay first')
  args = parser.parse_args()
  from embodied import jax as ejax
  ejax.setup('cpu', 'float32')
  learners = {'base': build(args.base, args.steps),
              'variant': build(args.variant, args.steps)}
  for learner in learners.values():
    for _ in range(args.warmup):
      learner()
  times = {k: [] for k in learners}
  for _ in range(args.rounds):
    for name, learner in learners.items():
      times[name].append(time_calls(learner, 1))
  median, cpu = {}, {}
  for name, pairs in times.items():
    median[name], cpu[name] = np.median(pairs, 0).tolist()
  print(json.dumps({
      'base': args.base, 'variant': args.variant, 'rounds': args.rounds,
      'base_s_per_update': round(median['base'], 4),
      'variant_s_per_update': round(median['variant'], 4),
      'variant_throughput_vs_base': round(
          median['base'] / median['variant'], 4),
      'base_cpu_s_per_update': round(cpu['base'], 4),
      'variant_cpu_s_per_update': round(cpu['variant'], 4),
      'variant_cpu_vs_base': round(cpu['variant'] / cpu['base'], 4)}))


if __name__ == '__main__':
  main()
