"""Cost of the report pass (losses plus open-loop videos) next to one train
update: mean seconds per call after compilation, and how much the process's
peak RSS grows when the report is compiled and run (after training has
already reached its own peak). Batches are replay-shaped random data from
the task's spaces; the report batch is run.report_batch x (run.report_length
+ replay_context) as in the train loop.

  python scripts/bench_report.py --configs size1m --task dummy_image
  python scripts/bench_report.py --configs size12m --task dummy_image --calls 3
  python scripts/bench_report.py --configs size12m --task dummy_image --report-first

--report-first runs the report before any training, so the RSS growth is the
report's own (compile and run) rather than what it adds above training.
"""

import pathlib
import resource
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402


def rss_gb():
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 ** 2


def random_batch(agent, batch, length, rng):
  data = agent._dummy_batch(batch, length)
  for key, value in data.items():
    if value.dtype == np.uint8:
      data[key] = rng.integers(0, 256, value.shape).astype(np.uint8)
    elif value.dtype == bool:
      data[key] = np.zeros(value.shape, bool)
    elif np.issubdtype(value.dtype, np.floating):
      data[key] = rng.normal(0, 1, value.shape).astype(value.dtype)
  for key, space in agent.act_space.items():
    if space.discrete:
      data[key] = rng.integers(space.low, space.high, data[key].shape).astype(
          space.dtype)
  if 'stoch' in data:
    data['stoch'] = np.zeros(data['stoch'].shape, np.int8)
  data['is_first'][:, 0] = True
  return data


def timed(fn, calls):
  fn()  # Compile (or warm up).
  start = time.perf_counter()
  for _ in range(calls):
    fn()
  return (time.perf_counter() - start) / calls


def main(argv):
  calls = 3
  report_first = '--report-first' in argv
  argv = [a for a in argv if a != '--report-first']
  if '--calls' in argv:
    i = argv.index('--calls')
    calls = int(argv[i + 1])
    argv = argv[:i] + argv[i + 2:]
  from dreamerv3 import main as dmain
  from embodied import jax as ejax
  config = dmain.parse(argv + ['--jax.cache_dir', ''])
  ejax.setup(config.jax.platform, config.jax.compute_dtype)
  env = dmain.make_env(config, 0)
  agent = dmain.make_agent(config, env.obs_space, env.act_space)
  env.close()
  rng = np.random.default_rng(0)
  K = config.replay_context
  train = random_batch(agent, config.batch_size, config.batch_length + K, rng)
  length = min(config.run.report_length, config.batch_length)
  report = random_batch(agent, config.run.report_batch, length + K, rng)

  start = rss_gb()
  if report_first:
    report_s = timed(lambda: agent.report(report), calls)
    after_report = rss_gb()
    print(f'Peak RSS: {start:.2f} GB after building, {after_report:.2f} GB '
          f'after the report alone (+{after_report - start:.3f} GB)')
    train_s = timed(lambda: agent.train(train), calls)
    after_train = rss_gb()
  else:
    train_s = timed(lambda: agent.train(train), calls)
    after_train = rss_gb()
    report_s = timed(lambda: agent.report(report), calls)
    after_report = rss_gb()
  out = agent.report(report)
  videos = {k: v.shape for k, v in out.items() if np.ndim(v) == 4}
  print(f'Config: {" ".join(argv)}')
  print(f'Train batch {config.batch_size}x{config.batch_length + K}, report '
        f'batch {config.run.report_batch}x{length + K}; videos {videos}')
  print(f'Train update: {train_s:.3f} s (compile '
        f"{agent.compile_time.get('train', 0):.1f} s)")
  print(f'Report pass:  {report_s:.3f} s (compile '
        f"{agent.compile_time.get('report', 0):.1f} s), "
        f'{report_s / train_s:.2f}x a train update')
  if not report_first:
    print(f'Peak RSS: {start:.2f} GB after building, {after_train:.2f} GB '
          f'after training, {after_report:.2f} GB after the report '
          f'(+{after_report - after_train:.3f} GB)')


if __name__ == '__main__':
  main(sys.argv[1:])
