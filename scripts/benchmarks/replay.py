"""Prioritized replay.

1. Sampler throughput: one op draws a batch of batch_size items and writes
   their new priorities, among --bench.items items, for
     - the raw SumTree (sample + set),
     - the Prioritized sampler (adds priority aggregation over batch_length
       steps, bookkeeping and meanstd statistics),
     - NumPy's Generator.choice(p=...) over the weight array (the update is
       an array write; choice normalises and scans all n weights per call).
2. uncertainty_caching cost per refresh: the time of one buffer-wide
   uncertainty recompute (dreamerv3/priority.py) with the agent built
   from the config on a replay holding --bench.cache_items items
   (compilation is timed apart).

Without config flags the config is `--configs size1m --task dummy_image`.

  python scripts/bench.py replay
  python scripts/bench.py replay --bench.samplers False \\
      --bench.cache_items 1e5 --configs size1m --task dummy_image
  python scripts/bench.py replay --bench.cache False --bench.items 1e6 \\
      --bench.ops 20000
"""

import time

import numpy as np

from scripts.benchmarks import common

OPTIONS = {
    'samplers': (True, 'time the samplers'),
    'items': (1000000, 'items in the samplers'),
    'ops': (5000, 'timed sampler ops (numpy choice: ops / 200)'),
    'cache': (True, 'time an uncertainty refresh'),
    'cache_items': (100000, 'items in the refreshed replay'),
}
DEFAULT_FLAGS = ['--configs', 'size1m', '--task', 'dummy_image']


def run(options, flags):
  config = common.parse_config(flags or DEFAULT_FLAGS)
  results = {}
  if options['samplers']:
    results.update(samplers(options['items'], config.batch_size,
                            config.batch_length, options['ops']))
  if options['cache']:
    results.update(refresh(config, options['cache_items']))
  return results


def rate(fn, ops, warmup=20):
  for _ in range(warmup):
    fn()
  return 1 / common.time_calls(fn, ops)[0]


def samplers(n, batch, length, ops):
  from embodied.core import Prioritized, SumTree
  rng = np.random.default_rng(0)
  weights = rng.exponential(size=n)

  tree = SumTree(n)
  tree.set(np.arange(n), weights)
  def tree_op():
    ids = tree.sample(batch, rng)
    tree.set(ids, rng.exponential(size=batch))

  sampler = Prioritized(initial='meanstd', seed=0)
  sampler.insert(np.arange(n))
  sampler.prioritize(np.arange(n), weights[:, None])
  values = rng.exponential(size=(batch, length)).astype(np.float32)
  def prio_op():
    ids = sampler.sample(batch)
    sampler.prioritize(ids, values)

  w = weights.copy()
  def choice_op():
    ids = rng.choice(n, batch, p=w / w.sum())
    w[ids] = rng.exponential(size=batch)

  tree_rate = rate(tree_op, ops)
  prio_rate = rate(prio_op, ops)
  choice_rate = rate(choice_op, max(10, ops // 200), warmup=2)
  return {
      'items': n, 'batch': f'{batch}x{length}',
      'sumtree_ops_per_s': tree_rate,
      'prioritized_ops_per_s': prio_rate,
      'choice_ops_per_s': choice_rate,
      'sumtree_vs_choice': tree_rate / choice_rate,
      'prioritized_vs_choice': prio_rate / choice_rate}


def refresh(config, items):
  """One buffer-wide uncertainty refresh on a replay of `items` items."""
  from dreamerv3 import main as dmain
  from embodied.core import Prioritized, Replay
  from embodied.run.common import Learner
  config = config.update({'priority.signal': 'uncertainty',
                          'replay.fracs': {'uniform': 0.0, 'priority': 1.0},
                          'priority.cache_every': 1})
  common.setup_jax(config)
  obs_space, act_space = common.spaces(config)
  agent = dmain.make_agent(config, obs_space, act_space)
  length = config.batch_length + config.replay_context
  sampler = Prioritized(initial='meanstd')
  chunksize = max(config.replay.chunksize, length + 1)
  replay = Replay(length, capacity=items + 4 * chunksize,
                  chunksize=chunksize, online=False, sampler=sampler)
  steps = items + length - 1
  print(f'Filling replay with {steps:,} steps ({items:,} items)...',
        flush=True)
  pool = step_pool({**obs_space, **act_space})
  for t in range(steps):
    replay.add(pool[t % len(pool)])
  learner = Learner(agent, replay, config.batch_size,
                    context=config.replay_context)
  ids = replay.item_ids()
  start = time.perf_counter()
  agent.uncertainty(learner._complete(replay.gather(ids[:config.batch_size])))
  compile_s = time.perf_counter() - start
  for work in learner.work:  # The priority extension's refresh.
    work.updated(1)
  stats = learner.stats()
  seconds = stats['replay/cache_seconds']
  results = {
      'cache_items': len(ids), 'compile_uncertainty_s': compile_s,
      'refresh_s': seconds, 'refresh_batches': stats['replay/cache_batches'],
      'refresh_items_per_s': len(ids) / seconds}
  results.update({f'sampler/{k}': v for k, v in sampler.stats().items()})
  return results


def step_pool(spaces, count=16):
  """A few distinct random steps, reused: the content does not change the
  cost."""
  rng = np.random.default_rng(0)
  pool = []
  for _ in range(count):
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
  return pool
