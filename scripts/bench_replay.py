"""Prioritized replay benchmark. Prints figures; asserts nothing about time.

1. Sampler throughput: one op = draw a batch of 16 items and write their 16
   new priorities, with 1e6 items, for
     - the raw SumTree (sample + set),
     - the Prioritized sampler (adds priority aggregation over T steps,
       bookkeeping and meanstd statistics),
     - NumPy's Generator.choice(p=...) over the weight array (the update is
       an array write; choice normalises and scans all n weights per call).
2. uncertainty_caching cost per refresh: the time of one buffer-wide
   uncertainty recompute (embodied/run/priorities.py) with the agent built
   from the given config on a replay holding --items items (compilation is
   timed separately).

  python scripts/bench_replay.py
  python scripts/bench_replay.py --skip_samplers --items 1e5 \\
      --configs size1m --task dummy_image
  python scripts/bench_replay.py --skip_cache --n 1e6 --ops 20000
"""

import argparse
import pathlib
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from embodied.core import Prioritized, Replay, SumTree  # noqa: E402


def rate(fn, ops, warmup=20):
  for _ in range(warmup):
    fn()
  start = time.perf_counter()
  for _ in range(ops):
    fn()
  return ops / (time.perf_counter() - start)


def bench_samplers(n, batch, ops, length=64):
  rng = np.random.default_rng(0)
  weights = rng.exponential(size=n)
  print(f'Sampler ops/s (sample {batch} + update {batch}, {n:,} items):')

  tree = SumTree(n)
  tree.set(np.arange(n), weights)
  def tree_op():
    ids = tree.sample(batch, rng)
    tree.set(ids, rng.exponential(size=batch))
  tree_rate = rate(tree_op, ops)
  print(f'  SumTree                  {tree_rate:12,.0f}')

  sampler = Prioritized(initial='meanstd', seed=0)
  sampler.insert(np.arange(n))
  sampler.prioritize(np.arange(n), weights[:, None])
  values = rng.exponential(size=(batch, length)).astype(np.float32)
  def prio_op():
    ids = sampler.sample(batch)
    sampler.prioritize(ids, values)
  prio_rate = rate(prio_op, ops)
  print(f'  Prioritized sampler      {prio_rate:12,.0f}   '
        f'(aggregates [{batch}, {length}] step values)')

  w = weights.copy()
  def choice_op():
    ids = rng.choice(n, batch, p=w / w.sum())
    w[ids] = rng.exponential(size=batch)
  choice_rate = rate(choice_op, max(10, ops // 200), warmup=2)
  print(f'  numpy choice(p=...)      {choice_rate:12,.0f}')
  print(f'  SumTree / choice         {tree_rate / choice_rate:12,.0f}x')
  print(f'  Prioritized / choice     {prio_rate / choice_rate:12,.0f}x')


def bench_cache(argv, items):
  from dreamerv3 import main as dmain
  from embodied import jax as ejax
  from embodied.run.common import Learner
  config = dmain.parse(argv)
  config = config.update({'replay.priosignal': 'uncertainty'})
  env = dmain.make_env(config, 0)
  obs_space, act_space = env.obs_space, env.act_space
  env.close()
  ejax.setup(config.jax.platform, config.jax.compute_dtype)
  agent = dmain.make_agent(config, obs_space, act_space)
  length = config.batch_length + config.replay_context
  sampler = Prioritized(initial='meanstd')
  chunksize = max(config.replay.chunksize, length + 1)
  replay = Replay(length, capacity=items + 4 * chunksize,
                  chunksize=chunksize, online=False, sampler=sampler)
  rng = np.random.default_rng(0)
  spaces = {**obs_space, **act_space}
  steps = items + length - 1
  print(f'Filling replay with {steps:,} steps ({items:,} items)...')
  # A few distinct random steps, reused: the content does not change cost.
  pool = []
  for i in range(16):
    step = {}
    for key, space in spaces.items():
      if key == 'reset' or key.startswith('log/'):
        continue
      if np.issubdtype(space.dtype, np.floating):
        step[key] = rng.normal(size=space.shape).astype(space.dtype)
      elif space.dtype == bool:
        step[key] = np.zeros(space.shape, bool)
      else:
        step[key] = rng.integers(space.low, space.high, space.shape).astype(
            space.dtype)
    pool.append(step)
  for t in range(steps):
    replay.add(pool[t % len(pool)])
  learner = Learner(agent, replay, config.batch_size, cache_every=1,
                    context=config.replay_context)
  ids = replay.item_ids()
  start = time.perf_counter()
  agent.uncertainty(learner._complete(replay.gather(ids[:config.batch_size])))
  print(f'Compile uncertainty: {time.perf_counter() - start:.2f} s')
  learner.refresh.refresh()
  stats = learner.stats()
  secs = stats['replay/cache_seconds']
  print(f"Full refresh of {len(ids):,} items: {secs:,.3g} s in "
        f"{stats['replay/cache_batches']:,} batches of {config.batch_size} "
        f'({len(ids) / secs:,.0f} items/s)')
  print(f"Sampler after refresh: {sampler.stats()}")


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--n', type=float, default=1e6)
  parser.add_argument('--batch', type=int, default=16)
  parser.add_argument('--ops', type=int, default=5000)
  parser.add_argument('--items', type=float, default=1e5)
  parser.add_argument('--skip_cache', action='store_true')
  parser.add_argument('--skip_samplers', action='store_true')
  args, rest = parser.parse_known_args()
  if not args.skip_samplers:
    bench_samplers(int(args.n), args.batch, args.ops)
  if not args.skip_cache:
    argv = rest or ['--configs', 'size1m', '--task', 'dummy_image']
    bench_cache(argv, int(args.items))


if __name__ == '__main__':
  main()
