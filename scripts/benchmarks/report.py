"""Cost of the report pass (losses plus open-loop videos) next to one train
update: mean seconds per call after compilation, and how much the process's
peak RSS grows when the report is compiled and run (after training has
already reached its own peak). Batches are random data from the task's
spaces; the report batch is run.report_batch x (run.report_length +
replay_context) as in the train loop.

  python scripts/bench.py report --configs size1m --task dummy_image
  python scripts/bench.py report --configs size12m --task dummy_image \\
      --bench.report_first True

--bench.report_first runs the report before any training, so the RSS growth
is the report's own (compile and run) rather than what it adds above
training.
"""

import time

import numpy as np

from scripts.benchmarks import common

OPTIONS = {
    'calls': (3, 'timed calls of each, after the compiling one'),
    'report_first': (False, 'run the report before training'),
}


def timed(fn, calls):
  fn()  # Compile (or warm up).
  start = time.perf_counter()
  for _ in range(calls):
    fn()
  return (time.perf_counter() - start) / calls


def run(options, flags):
  from dreamerv3 import main as dmain
  config = common.parse_config(flags)
  common.setup_jax(config)
  obs_space, act_space = common.spaces(config)
  agent = dmain.make_agent(config, obs_space, act_space)
  K = config.replay_context
  train = common.random_batch(agent, 0)
  length = min(config.run.report_length, config.batch_length)
  report = common.random_batch(agent, 1, config.run.report_batch, length + K)
  calls = options['calls']
  train_fn = lambda: agent.train(train)
  report_fn = lambda: agent.report(report)

  rss = {'built': common.peak_rss_gb()}
  first, second = (('report', report_fn), ('train', train_fn)) if \
      options['report_first'] else (('train', train_fn), ('report', report_fn))
  seconds = {}
  for name, fn in (first, second):
    seconds[name] = timed(fn, calls)
    rss[name] = common.peak_rss_gb()
  out = agent.report(report)
  # What the report adds to the peak: over the building when it runs
  # first, over training when it runs after it.
  before = rss['built'] if options['report_first'] else rss['train']
  return {
      'train_batch': f'{config.batch_size}x{config.batch_length + K}',
      'report_batch': f'{config.run.report_batch}x{length + K}',
      'videos': {k: list(v.shape) for k, v in out.items() if np.ndim(v) == 4},
      'train_s': seconds['train'],
      'compile_train_s': agent.compile_time.get('train', 0.0),
      'report_s': seconds['report'],
      'compile_report_s': agent.compile_time.get('report', 0.0),
      'report_vs_train': seconds['report'] / seconds['train'],
      'peak_rss_gb[built]': rss['built'],
      'peak_rss_gb[after_train]': rss['train'],
      'peak_rss_gb[after_report]': rss['report'],
      'report_rss_added_gb': rss['report'] - before}
