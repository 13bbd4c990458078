"""A config variant's cost on the train loop, measured A/B in one process.

  python scripts/bench.py ab --configs size1m --task dummy_image \\
      --bench.variant "--configs size1m uncertainty --task dummy_image"
  python scripts/bench.py ab --configs size12m --task dummy_image \\
      --bench.variant "--masking.enabled True" --bench.rounds 4

The base is the config flags plus --bench.base, the variant the config
flags plus --bench.variant (later flags win: a --configs there replaces the
earlier one; the JAX platform and dtype are the base's). Builds one agent,
replay and learner per config, fills both replays with the same random env
steps, then alternates train updates (sample from replay, train step, write
latents and priorities back) between the two, so that machine noise hits
both alike. Gives the median wall and CPU seconds per update of each (CPU
time is the steadier figure on a VM with steal time) and the variant's
ratios to the base.
"""

import shlex

import numpy as np

from scripts.benchmarks import common

OPTIONS = {
    'base': ('', 'flags of the base, after the config flags'),
    'variant': ('', 'flags of the variant, after the config flags'),
    'rounds': (10, 'timed updates of each, alternated'),
    'warmup': (2, 'updates of each before timing'),
    'steps': (4000, 'random env steps put into each replay first'),
}


def build(flags, steps):
  """A synchronous Learner on a filled replay for these config flags."""
  from dreamerv3 import main as dmain
  from embodied.run.common import Learner
  config = common.parse_config(flags)
  replay = dmain.make_replay(config, 'replay', directory=False)
  common.fill(config, replay, steps)
  obs_space, act_space = common.spaces(config)
  agent = dmain.make_agent(config, obs_space, act_space)
  # Synchronous updates: with prefetching, a call returns before its step
  # is done, and alternating two learners would blur which one is timed.
  return Learner(agent, replay, config.batch_size, config.replay_context,
                 prefetch=False)


def run(options, flags):
  if not options['variant']:
    raise SystemExit('ab needs --bench.variant "FLAGS" (what to compare)')
  argvs = {'base': flags + shlex.split(options['base']),
           'variant': flags + shlex.split(options['variant'])}
  # One JAX setup for both: the platform and dtype are global, so the
  # variant's jax.* flags would change the base's too.
  common.setup_jax(common.parse_config(argvs['base']))
  learners = {k: build(v, options['steps']) for k, v in argvs.items()}
  for learner in learners.values():
    for _ in range(options['warmup']):
      learner()
  times = {k: [] for k in learners}
  for _ in range(options['rounds']):
    for name, learner in learners.items():
      times[name].append(common.time_calls(learner, 1))
  wall, cpu = {}, {}
  for name, pairs in times.items():
    wall[name], cpu[name] = np.median(pairs, 0).tolist()
  return {
      'base': shlex.join(argvs['base']),
      'variant': shlex.join(argvs['variant']),
      'rounds': options['rounds'],
      'base_s_per_update': wall['base'],
      'variant_s_per_update': wall['variant'],
      'variant_throughput_vs_base': wall['base'] / wall['variant'],
      'base_cpu_s_per_update': cpu['base'],
      'variant_cpu_s_per_update': cpu['variant'],
      'variant_cpu_vs_base': cpu['variant'] / cpu['base']}
