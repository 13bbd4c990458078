"""The member axis (--run.seeds N): the steps of N agents as one vmapped
program against one agent's, in one process. Per member count: the agent's
creation (it compiles its initialiser), the train step's trace (lower) and
XLA compile seconds apart, the compiled program's instruction count, and,
with --bench.updates, CPU and wall seconds per seed-update of the compiled
train step on random batches, the counts interleaved round by round so
that load swings hit all alike. --bench.parts adds the policy and report
steps, timed likewise (their compile times as the agent measures them).

  python scripts/bench.py members --configs size1m --task dummy_image \\
      --bench.seeds 1,2,4
  python scripts/bench.py members --configs size12m --task dummy_image \\
      --bench.seeds 1,8 --bench.updates 0
  python scripts/bench.py members --configs size1m --task dummy_image \\
      --bench.seeds 2 --bench.member_ops map,grouped

--bench.member_ops compares the batching of ops with a kernel per member
(embodied/jax/nets.py, member_ops: map loops over members, grouped is
XLA's grouped form); the default is the backend's choice. Keys of the JSON
name the count and, with several modes, the mode:
`train_cpu_s_per_seed[2,map]`; `*_vs_first` are ratios to the first arm.
"""

import time

import numpy as np

from scripts.benchmarks import common

OPTIONS = {
    'seeds': ('1,2,4', 'member counts, comma-separated (1: no member axis)'),
    'updates': (3, 'timed train steps per count (0: compile only)'),
    'parts': ('train', 'steps to time: train, policy, report (comma-sep)'),
    'member_ops': ('auto', 'nets member ops mode(s): auto, map, grouped'),
    'envs': (4, 'envs per member of the timed policy step'),
}


def build(config, count, obs_space, act_space):
  from dreamerv3 import main as dmain
  return dmain.make_agent(
      config.update({'run.seeds': str(count)}), obs_space, act_space)


def stacked(agent, count, seed):
  """A random train batch of the agent's shape, one per member."""
  each = [common.random_batch(agent, seed + k) for k in range(count)]
  if count == 1:
    return each[0]
  return {k: np.stack([b[k] for b in each]) for k in each[0]}


def random_obs(agent, count, envs, rng):
  obs = {}
  for key, space in agent.obs_space.items():
    shape = (count, envs, *space.shape) if count > 1 else (envs, *space.shape)
    if space.dtype == bool:
      obs[key] = np.zeros(shape, bool)
    elif np.issubdtype(space.dtype, np.integer):
      obs[key] = rng.integers(0, 2, shape).astype(space.dtype)
    else:
      obs[key] = rng.normal(0, 0.5, shape).astype(space.dtype)
  return obs


def instructions(text):
  """HLO instructions in a compiled program's text."""
  return sum(1 for line in text.splitlines()
             if ' = ' in line and not line.lstrip().startswith(
                 ('HloModule', '//')))


class Arm:
  """One member count and mode: its agent, compiled train step and
  timers."""

  def __init__(self, config, count, mode, spaces, options):
    from embodied.jax import nets
    before = nets._member_ops[0]
    nets.set_member_ops(mode)  # Read when the steps are traced.
    self.count, self.mode = count, mode
    start = time.perf_counter()
    self.agent = agent = build(config, count, *spaces)
    self.init_s = time.perf_counter() - start
    self.data = agent.put(stacked(agent, count, 0))
    args = (agent.state, self.data, agent._inputs(), agent._next_seed())
    start = time.perf_counter()
    lowered = agent._train.lower(*args)
    self.lower_s = time.perf_counter() - start
    start = time.perf_counter()
    self.compiled = lowered.compile()
    self.compile_s = time.perf_counter() - start
    self.instructions = instructions(self.compiled.as_text())
    self.times = {}
    self.parts = {}
    if options['updates']:
      self.parts['train'] = self.train
      self.train()  # Warm-up.
    wanted = options['parts'].split(',')
    rng = np.random.default_rng(0)
    if 'policy' in wanted:
      self.carry = agent.init_policy(options['envs'])
      self.obs = random_obs(agent, count, options['envs'], rng)
      self.policy()  # Compiles.
      self.parts['policy'] = self.policy
    if 'report' in wanted:
      agent.report(self.data)  # Compiles.
      self.parts['report'] = lambda: agent.report(self.data)
    self.compile_other = {k: v for k, v in agent.compile_time.items()
                          if k in ('policy_train', 'report')}
    nets.set_member_ops(before)

  def train(self):
    import jax
    agent = self.agent
    agent.state, out = self.compiled(
        agent.state, self.data, agent._inputs(), agent._next_seed())
    jax.block_until_ready(out)

  def policy(self):
    self.carry, _, _ = self.agent.policy(self.carry, self.obs)

  def time_round(self):
    for name, fn in self.parts.items():
      self.times.setdefault(name, []).append(common.time_calls(fn, 1))


def run(options, flags):
  from embodied.jax import nets
  counts = [int(c) for c in options['seeds'].split(',')]
  modes = options['member_ops'].split(',')
  bad = [m for m in modes if m not in nets.MEMBER_OPS]
  if bad or not counts or min(counts) < 1:
    raise SystemExit(f'--bench.seeds takes counts >= 1 and '
                     f'--bench.member_ops modes of {nets.MEMBER_OPS}')
  config = common.parse_config(flags)
  platform, dtype = common.setup_jax(config)
  spaces = common.spaces(config)
  results = {'task': config.task, 'platform': platform, 'dtype': dtype,
             'batch': f'{config.batch_size}x{config.batch_length}'}
  arms = []
  for i, mode in enumerate(modes):
    for count in counts:
      if count > 1 or i == 0:  # One member has no member axis to batch.
        arms.append(Arm(config, count, mode, spaces, options))
  for _ in range(options['updates']):
    for arm in arms:
      arm.time_round()
  name = lambda a: f'{a.count},{a.mode}' if len(modes) > 1 else str(a.count)
  for arm in arms:
    key = name(arm)
    results[f'init_s[{key}]'] = arm.init_s
    results[f'lower_s[{key}]'] = arm.lower_s
    results[f'compile_s[{key}]'] = arm.compile_s
    results[f'hlo_instructions[{key}]'] = arm.instructions
    for part, seconds in arm.compile_other.items():
      results[f'compile_{part}_s[{key}]'] = seconds
    for part, pairs in arm.times.items():
      wall, cpu = np.median(pairs, 0).tolist()
      results[f'{part}_s[{key}]'] = wall
      results[f'{part}_cpu_s_per_seed[{key}]'] = cpu / arm.count
  # Ratios to the first arm: trace and compile of the train step, and
  # its CPU seconds per seed-update.
  first = arms[0]
  total = lambda a: a.lower_s + a.compile_s
  per_seed = lambda a: np.median([c for _, c in a.times['train']]) / a.count
  for arm in arms[1:]:
    results[f'compile_vs_first[{name(arm)}]'] = total(arm) / total(first)
    if 'train' in arm.times:
      results[f'train_cpu_per_seed_vs_first[{name(arm)}]'] = (
          per_seed(arm) / per_seed(first))
  results['peak_rss_gb'] = common.peak_rss_gb()
  return results
