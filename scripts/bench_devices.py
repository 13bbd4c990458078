"""Data parallel over mock CPU devices: the same total batch trained on 1, 2
and 4 devices (`XLA_FLAGS=--xla_force_host_platform_device_count=N`, one
child process each, since JAX fixes its devices at start). Prints compile
time, updates/s, CPU seconds per update and the largest parameter
difference from the 1-device run after the same few steps on the same
batches and seeds (parameters and statistics; the optimizer state apart). On one CPU the devices share its cores: the figures show
the overhead of sharding, not a speed-up.

  python scripts/bench_devices.py --configs debug --task dummy_vector
  python scripts/bench_devices.py --configs cartpole --bench.updates 10

Options (besides any config override): --bench.devices 1,2,4,
--bench.steps N (steps before the parameters are compared),
--bench.updates N (timed steps after those).
"""

import json
import os
import pathlib
import subprocess
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from scripts import timing  # noqa: E402

BENCH = {'devices': '1,2,4', 'steps': 3, 'updates': 10}


def split_args(argv):
  return timing.split_args(argv, BENCH)


def random_batch(agent, seed):
  """A batch of the agent's train shape with random values in each space."""
  rng = np.random.default_rng(seed)
  data = agent._dummy_batch()
  spaces = {**agent.obs_space, **agent.act_space, **agent.ext_space}
  for key, space in spaces.items():
    shape = data[key].shape
    if space.dtype == bool:
      data[key] = rng.uniform(size=shape) < 0.05
    elif np.issubdtype(space.dtype, np.integer):
      low = np.maximum(space.low, -100)
      high = np.minimum(space.high, 100)
      data[key] = rng.integers(low, np.maximum(high, low + 1), shape).astype(
          space.dtype)
    else:
      value = rng.normal(0, 0.5, shape)
      data[key] = np.clip(value, space.low, space.high).astype(space.dtype)
  data['is_first'][:, 0] = True
  data['stepid'] = rng.integers(0, 2 ** 31, data['stepid'].shape)
  return data


def child(devices, steps, updates, argv, out):
  """One device count: train, save parameters, time."""
  from dreamerv3 import main as dmain
  from embodied import jax as ejax
  from scripts.timing import time_calls
  config = dmain.parse(argv + ['--jax.train_devices', str(devices)])
  ejax.setup('cpu', config.jax.compute_dtype, False, config.jax.xla_flags)
  env = dmain.make_env(config, 0)
  obs_space, act_space = env.obs_space, env.act_space
  env.close()
  agent = dmain.make_agent(config, obs_space, act_space)
  batches = [random_batch(agent, i) for i in range(steps + 1)]
  for batch in batches[:steps]:
    agent.train(batch)
  np.savez(out, **agent.save())
  dt, cpu = time_calls(lambda: agent.train(batches[-1]), updates)
  return {'devices': devices, 'compile_s': agent.compile_time['train'],
          'updates_per_s': 1 / dt, 'cpu_s_per_update': cpu,
          'recompiles': agent.compile_counts()['train'] - 1}


def main():
  if len(sys.argv) > 1 and sys.argv[1] == '--child':
    devices, steps, updates, out = sys.argv[2:6]
    result = child(int(devices), int(steps), int(updates), sys.argv[6:], out)
    print('RESULT ' + json.dumps(result), flush=True)
    return
  bench, rest = split_args(sys.argv[1:])
  counts = [int(x) for x in bench['devices'].split(',')]
  print(f"bench_devices {' '.join(rest)} | devices {counts} | "
        f"{bench['steps']} compared steps, {bench['updates']} timed | "
        f"{time.strftime('%Y-%m-%d %H:%M')}")
  results, params = [], {}
  with tempfile.TemporaryDirectory() as tmp:
    for count in counts:
      env = dict(os.environ, JAX_PLATFORMS='cpu')
      env['XLA_FLAGS'] = (env.get('XLA_FLAGS', '') + ' --xla_force_host_'
                          f'platform_device_count={count}').strip()
      out = os.path.join(tmp, f'{count}.npz')
      proc = subprocess.run(
          [sys.executable, __file__, '--child', str(count),
           str(bench['steps']), str(bench['updates']), out, *rest],
          env=env, cwd=str(ROOT), capture_output=True, text=True)
      lines = [l for l in proc.stdout.splitlines() if l.startswith('RESULT ')]
      if proc.returncode or not lines:
        raise SystemExit(f'{count} devices failed:\n{proc.stdout[-2000:]}'
                         f'{proc.stderr[-3000:]}')
      result = json.loads(lines[-1][len('RESULT '):])
      data = np.load(out)
      params[count] = {k: data[k] for k in data.files}
      base = params[counts[0]]
      diffs = {k: float(np.abs(params[count][k].astype(np.float64) -
                                base[k].astype(np.float64)).max())
               for k in base}
      # The optimizer's normalised momentum turns rounding in near-zero
      # gradients (g / sqrt(nu), nu ~ 1e-17) into large differences, so it
      # is reported apart from the parameters and statistics.
      result['max_abs_diff'] = max(
          v for k, v in diffs.items() if '/opt/' not in k)
      result['max_abs_diff_opt'] = max(
          [v for k, v in diffs.items() if '/opt/' in k] or [0.0])
      results.append(result)
      print(f"  {count} device(s): compile {result['compile_s']:.1f} s, "
            f"{result['updates_per_s']:.3f} updates/s, "
            f"{result['cpu_s_per_update']:.3f} CPU-s/update, "
            f"max |param - {counts[0]}-device| {result['max_abs_diff']:.2e} "
            f"(optimizer state {result['max_abs_diff_opt']:.2e}), "
            f"recompiles {result['recompiles']}", flush=True)
  print('JSON ' + json.dumps(results))


if __name__ == '__main__':
  main()
