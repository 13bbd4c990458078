"""Throughput of the train loop's parts for any config and task: env steps/s
through the Driver with random actions, policy steps/s, train updates/s on
batches from replay (latents written back as in a run), replayed steps/s,
CPU seconds per update and cores kept busy, compile times, XLA-counted
GFLOP per update and achieved GFLOP/s, peak RSS and peak device memory.

  python scripts/bench.py train --configs size1m --task dummy_image
  python scripts/bench.py train --configs size12m --task dummy_image \\
      --bench.updates 5
  python scripts/bench.py train --configs cartpole --bench.flops False \\
      --bench.datapaths True

--bench.flops counts FLOPs with XLA's cost analysis on a second compile
whose scans are unrolled, since XLA counts a loop body only once.
--bench.datapaths also times the same compiled train step with
run.prefetch on and off and replay.device host and accelerator. With
--run.seeds N the N seeds train as one program (each its own envs and
replay): updates/s are of that program, so per seed as well; replayed
steps/s count all seeds; CPU seconds are per seed-update.
"""

import time

from scripts.benchmarks import common

OPTIONS = {
    'updates': (10, 'timed train steps'),
    'env_steps': (2000, 'timed env steps (a quarter of them with the policy)'),
    'flops': (True, 'count FLOPs per update on an unrolled compile'),
    'warmup': (2, 'train steps before timing'),
    'datapaths': (False, 'also time prefetch/sync x host/accelerator replay'),
}


class Quiet:
  """A logger that counts steps and logs nothing."""

  def __init__(self):
    import elements
    self.step = elements.Counter()

  def add(self, *args, **kwargs):
    pass


def run(options, flags):
  import embodied
  from dreamerv3 import main as dmain
  from embodied.run.members import Members
  config = common.parse_config(flags)
  platform, dtype = common.setup_jax(config)
  obs_space, act_space = common.spaces(config)
  configs = dmain.Seeds(config).members(config)
  seeds = len(configs)
  results = {'task': config.task, 'platform': platform, 'dtype': dtype,
             'batch': f'{config.batch_size}x{config.batch_length}',
             'seeds': seeds}

  start = time.perf_counter()
  agent = dmain.make_agent(config, obs_space, act_space)
  results['init_s'] = time.perf_counter() - start
  results['params'] = sum(agent.param_counts().values())
  # Each seed's envs and replay, as in a run (no logdir).
  members = Members(
      agent, dmain.by_member(dmain.make_replay, configs, directory=False),
      lambda member: Quiet(),
      config.run.envs)
  envs = config.run.envs * seeds

  # Raw env throughput through the driver with a random policy.
  driver = embodied.Driver(
      members.env_fns(dmain.by_member(dmain.make_env, configs)),
      parallel=config.run.parallel_envs)
  driver.on_step(members.route(members.on_step))
  policy = common.random_policy(act_space)
  driver(policy, steps=envs)
  start = time.perf_counter()
  driver(policy, steps=options['env_steps'])
  results['env_steps_per_s'] = options['env_steps'] / (
      time.perf_counter() - start)

  # Acting with the agent's policy (compiled on the first call).
  driver.reset(members.init_policy)
  agent_policy = members.policy('train')
  driver(agent_policy, steps=envs)
  results['compile_policy_s'] = agent.compile_time['policy_train']
  steps = max(envs, options['env_steps'] // 4)
  start = time.perf_counter()
  driver(agent_policy, steps=steps)
  results['policy_steps_per_s'] = steps / (time.perf_counter() - start)
  driver.close()

  # Training on batches from replay, on the config's data path.
  from embodied.run.common import Learner
  learner = Learner(agent, members.replay, config.batch_size,
                    prefetch=config.run.prefetch)
  learner()
  results['compile_train_s'] = agent.compile_time['train']
  for _ in range(options['warmup'] - 1):
    learner()
  learner.stats()
  dt, cpu = common.time_calls(learner, options['updates'])
  learner.flush()
  stats = learner.stats()
  results['learner_wait_frac'] = stats['learner/wait_frac']
  results['learner_dispatch_frac'] = stats.get('learner/dispatch_frac', 0.0)
  results['updates_per_s'] = 1 / dt
  results['cpu_s_per_update'] = cpu
  results['cpu_s_per_seed_update'] = cpu / seeds
  results['cores_busy'] = cpu / dt
  results['replayed_steps_per_s'] = (
      seeds * config.batch_size * config.batch_length / dt)
  results['peak_rss_gb'] = common.peak_rss_gb()
  results['peak_device_gb'] = common.peak_device_gb()

  if options['datapaths'] and seeds == 1:
    results.update(datapaths(agent, config, options))
    results['peak_device_gb'] = common.peak_device_gb()

  counts = agent.compile_counts()
  results['recompiles'] = {k: v for k, v in counts.items() if v > 1} or 'none'
  if options['flops']:
    results.update(count_flops(config, obs_space, act_space, dt))
  return results


def datapaths(agent, config, options):
  """The same compiled step fed four ways: prefetching or not, replay on
  the host or on the accelerator."""
  from dreamerv3 import main as dmain
  out = {}
  for device in ('host', 'accelerator'):
    other = config.update({'replay.device': device})
    data = dmain.make_replay(other, 'replay', directory=False)
    common.fill(other, data, options['env_steps'])
    for prefetch in (True, False):
      dt, stats = time_learner(agent, data, config, options, prefetch)
      name = f'{"prefetch" if prefetch else "sync"}_{device}'
      out[f'updates_per_s[{name}]'] = 1 / dt
      out[f'wait_frac[{name}]'] = stats['learner/wait_frac']
      if prefetch:
        out[f'dispatch_frac[{name}]'] = stats['learner/dispatch_frac']
  return out


def time_learner(agent, replay, config, options, prefetch):
  """(seconds per update, the learner's stats)."""
  from embodied.run.common import Learner
  learner = Learner(agent, replay, config.batch_size, prefetch=prefetch)
  # Replay on the accelerator compiles its upload for the first few sizes
  # of written-back steps: warm up past them.
  for _ in range(max(4, options['warmup'])):
    learner()
  learner.stats()
  dt, _ = common.time_calls(learner, options['updates'])
  learner.flush()
  return dt, learner.stats()


def count_flops(config, obs_space, act_space, seconds_per_update):
  """FLOPs of one train step from XLA's cost analysis, compiled with the
  RSSM scans unrolled so every step is counted."""
  from embodied import jax as ejax
  from dreamerv3 import main as dmain
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
