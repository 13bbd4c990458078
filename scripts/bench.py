"""Throughput benchmark: env steps/s, policy steps/s, train updates/s,
replayed steps/s, compile times, achieved GFLOP/s and peak memory for any
config and task. Prints figures; asserts nothing about time.

  python scripts/bench.py --configs size1m --task dummy_image
  python scripts/bench.py --configs size12m --task dummy_image --updates 5
  python scripts/bench.py --configs cartpole --bench.flops False

Options (besides any config override): --bench.updates N (timed train
steps), --bench.env_steps N (timed env steps), --bench.flops True|False
(count FLOPs with XLA's cost analysis on a second compile whose scans are
unrolled, since XLA counts a loop body only once), --bench.datapaths
True|False (also time the same compiled train step with run.prefetch on and
off and replay.device host and accelerator).
"""

import functools
import json
import pathlib
import resource
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / 'dreamerv3'))

import numpy as np  # noqa: E402

from dreamerv3 import main as dmain  # noqa: E402
from scripts import timing  # noqa: E402
from scripts.timing import time_calls  # noqa: E402
import embodied  # noqa: E402

BENCH = {'updates': 10, 'env_steps': 2000, 'flops': True, 'warmup': 2,
         'datapaths': False}


def split_args(argv):
  return timing.split_args(argv, BENCH)


def peak_rss_gb():
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 ** 2


def peak_device_gb():
  """Peak memory in use on the first device, where JAX reports it (GPUs;
  None on CPUs)."""
  import jax
  stats = jax.local_devices()[0].memory_stats() or {}
  peak = stats.get('peak_bytes_in_use')
  return None if peak is None else peak / 1024 ** 3


def time_learner(agent, replay, config, bench, prefetch):
  """(seconds, CPU seconds) per update and the learner's wait fraction."""
  from embodied.run.common import Learner
  learner = Learner(agent, replay, config.batch_size, prefetch=prefetch)
  # Replay on the accelerator compiles its upload for the first few sizes
  # of written-back steps: warm up past them.
  for _ in range(max(4, bench['warmup'])):
    learner()
  learner.stats()
  dt, cpu = time_calls(learner, bench['updates'])
  learner.flush()
  return dt, cpu, learner.stats()['learner/wait_frac']


def fill(config, replay, steps):
  fns = [functools.partial(dmain.make_env, config, i)
         for i in range(config.run.envs)]
  driver = embodied.Driver(fns, parallel=config.run.parallel_envs)
  driver.on_step(replay.add)
  env = fns[0]()
  policy = functools.partial(random_policy, env.act_space)
  env.close()
  driver(policy, steps=steps)
  driver.close()


def random_policy(act_space, carry, obs):
  n = len(obs['is_first'])
  act = {k: np.stack([s.sample() for _ in range(n)])
         for k, s in act_space.items() if k != 'reset'}
  return carry, act, {}


def main(argv=None):
  bench, rest = split_args(sys.argv[1:] if argv is None else argv)
  config = dmain.parse(rest)
  config = config.update(logdir='/tmp/bench_unused')
  from embodied import jax as ejax
  # No compilation cache: compile times are part of what is measured.
  platform, dtype = ejax.setup(
      config.jax.platform, config.jax.compute_dtype, False,
      config.jax.xla_flags)
  make_env = functools.partial(dmain.make_env, config)
  env = make_env(0)
  obs_space, act_space = env.obs_space, env.act_space
  env.close()
  results = {'task': config.task, 'platform': platform, 'dtype': dtype,
             'batch': f'{config.batch_size}x{config.batch_length}'}

  # Raw env throughput through the driver with a random policy.
  fns = [functools.partial(make_env, i) for i in range(config.run.envs)]
  driver = embodied.Driver(fns, parallel=config.run.parallel_envs)
  replay = dmain.make_replay(config, 'replay', directory=False)
  driver.on_step(replay.add)
  policy = functools.partial(random_policy, act_space)
  driver(policy, steps=config.run.envs)
  start = time.perf_counter()
  driver(policy, steps=bench['env_steps'])
  results['env_steps_per_s'] = bench['env_steps'] / (
      time.perf_counter() - start)

  start = time.perf_counter()
  agent = dmain.make_agent(config, obs_space, act_space)
  results['init_s'] = time.perf_counter() - start
  results['params'] = sum(agent.param_counts().values())

  # Acting with the agent's policy (compiled on the first call).
  driver.reset(agent.init_policy)
  agent_policy = lambda c, o: agent.policy(c, o, mode='train')
  driver(agent_policy, steps=config.run.envs)
  results['compile_policy_s'] = agent.compile_time['policy_train']
  steps = max(config.run.envs, bench['env_steps'] // 4)
  start = time.perf_counter()
  driver(agent_policy, steps=steps)
  results['policy_steps_per_s'] = steps / (time.perf_counter() - start)
  driver.close()

  # Training on batches from replay, latents written back as in a run.
  from embodied.run.common import Learner
  # run.prefetch False: the synchronous data path, for comparison.
  learner = Learner(agent, replay, config.batch_size,
                    prefetch=config.run.prefetch)
  learner()
  results['compile_train_s'] = agent.compile_time['train']
  for _ in range(bench['warmup'] - 1):
    learner()
  learner.stats()
  dt, cpu = time_calls(learner, bench['updates'])
  learner.flush()
  results['learner_wait_frac'] = learner.stats()['learner/wait_frac']
  results['updates_per_s'] = 1 / dt
  results['cpu_s_per_update'] = cpu
  results['cores_busy'] = cpu / dt
  results["replayed_steps_per_s"] = config.batch_size * config.batch_length / dt
  results['peak_rss_gb'] = peak_rss_gb()
  results['peak_device_gb'] = peak_device_gb()

  if bench['datapaths']:
    # The same compiled step fed four ways: prefetching or not, replay on
    # the host or on the accelerator.
    for device in ('host', 'accelerator'):
      other = config.update({'replay.device': device})
      data = dmain.make_replay(other, 'replay', directory=False)
      fill(other, data, bench['env_steps'])
      for prefetch in (True, False):
        dt, _, wait = time_learner(agent, data, config, bench, prefetch)
        name = f'{"prefetch" if prefetch else "sync"}_{device}'
        results[f'updates_per_s[{name}]'] = 1 / dt
        results[f'wait_frac[{name}]'] = wait
    results['peak_device_gb'] = peak_device_gb()

  counts = agent.compile_counts()
  results['recompiles'] = {k: v for k, v in counts.items() if v > 1} or 'none'

  if bench['flops']:
    results.update(count_flops(config, obs_space, act_space, dt))

  print('\nBenchmark results')
  for key, value in results.items():
    if isinstance(value, float):
      value = f'{value:,.3f}' if value < 100 else f'{value:,.1f}'
    print(f'  {key:24s} {value}')
  print('JSON ' + json.dumps({
      k: v if not isinstance(v, float) else round(v, 4)
      for k, v in results.items()}))
  return results


def count_flops(config, obs_space, act_space, seconds_per_update):
  """FLOPs of one train step from XLA's cost analysis, compiled with the
  RSSM scans unrolled so every step is counted."""
  from embodied import jax as ejax
  from dreamerv3.agent import Dreamer
  c = config.update({'agent.dyn.unroll': True})
  agent = ejax.Agent(Dreamer, obs_space, act_space, dmain.agent_config(c))
  data = agent._put(agent._dummy_batch())
  start = time.perf_counter()
  compiled = agent._train.lower(
      agent.state, data, agent._inputs(), agent._next_seed()).compile()
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  flops = float(cost.get('flops', 0.0))
  return {
      'compile_unrolled_s': time.perf_counter() - start,
      'gflop_per_update': flops / 1e9,
      'gflop_per_s': flops / 1e9 / seconds_per_update}


if __name__ == '__main__':
  main()
