"""Data parallel over mock CPU devices: the same total batch trained on 1, 2
and 4 devices (XLA_FLAGS=--xla_force_host_platform_device_count=N, one
child process each, since JAX fixes its devices at start). Gives compile
time, updates/s, CPU seconds per update and the largest difference of the
parameters and statistics (and apart, of the optimizer state) from the
first device count's run after the same few steps on the same batches and
seeds. On one CPU the devices share its cores: the figures show the
overhead of sharding, not a speed-up.

  python scripts/bench.py devices --configs debug --task dummy_vector
  python scripts/bench.py devices --configs cartpole --bench.updates 10
"""

import json
import os
import subprocess
import sys
import tempfile

import numpy as np

from scripts.benchmarks import common

OPTIONS = {
    'devices': ('1,2,4', 'device counts, the first one the reference'),
    'steps': (3, 'train steps before the parameters are compared'),
    'updates': (10, 'timed train steps after those'),
}


def run(options, flags):
  common.parse_config(flags)  # Bad flags fail here, not in every child.
  counts = [int(x) for x in options['devices'].split(',')]
  results = {'devices': options['devices'], 'steps': options['steps'],
             'updates': options['updates']}
  params = {}
  with tempfile.TemporaryDirectory() as tmp:
    for count in counts:
      out = os.path.join(tmp, f'{count}.npz')
      result = start_child(count, options, flags, out)
      data = np.load(out)
      params[count] = {k: data[k] for k in data.files}
      result.update(differences(params[counts[0]], params[count]))
      print(f"  {count} device(s): compile {result['compile_s']:.1f} s, "
            f"{result['updates_per_s']:.3f} updates/s, "
            f"max |param - {counts[0]}-device| {result['max_abs_diff']:.2e} "
            f"(optimizer state {result['max_abs_diff_opt']:.2e})",
            flush=True)
      results.update({f'{k}[{count}]': v for k, v in result.items()})
  return results


def start_child(count, options, flags, out):
  env = dict(os.environ, JAX_PLATFORMS='cpu')
  env['XLA_FLAGS'] = (env.get('XLA_FLAGS', '') + ' --xla_force_host_'
                      f'platform_device_count={count}').strip()
  proc = subprocess.run(
      [sys.executable, '-m', 'scripts.benchmarks.devices', str(count),
       str(options['steps']), str(options['updates']), out, *flags],
      env=env, cwd=str(common.ROOT), capture_output=True, text=True)
  lines = [l for l in proc.stdout.splitlines() if l.startswith('RESULT ')]
  if proc.returncode or not lines:
    raise SystemExit(f'{count} devices failed:\n{proc.stdout[-2000:]}'
                     f'{proc.stderr[-3000:]}')
  return json.loads(lines[-1][len('RESULT '):])


def differences(base, other):
  diffs = {k: float(np.abs(other[k].astype(np.float64) -
                            base[k].astype(np.float64)).max()) for k in base}
  # The optimizer's normalised momentum turns rounding in near-zero
  # gradients (g / sqrt(nu), nu ~ 1e-17) into large differences, so it is
  # reported apart from the parameters and statistics.
  return {
      'max_abs_diff': max(v for k, v in diffs.items() if '/opt/' not in k),
      'max_abs_diff_opt': max(
          [v for k, v in diffs.items() if '/opt/' in k] or [0.0])}


def child(devices, steps, updates, out, flags):
  """One device count: train, save parameters, time."""
  from dreamerv3 import main as dmain
  config = common.parse_config(
      flags + ['--jax.train_devices', str(devices), '--jax.platform', 'cpu'])
  common.setup_jax(config)
  obs_space, act_space = common.spaces(config)
  agent = dmain.make_agent(config, obs_space, act_space)
  batches = [common.random_batch(agent, i) for i in range(steps + 1)]
  for batch in batches[:steps]:
    agent.train(batch)
  np.savez(out, **agent.save())
  dt, cpu = common.time_calls(lambda: agent.train(batches[-1]), updates)
  return {'compile_s': agent.compile_time['train'],
          'updates_per_s': 1 / dt, 'cpu_s_per_update': cpu,
          'recompiles': agent.compile_counts()['train'] - 1}


if __name__ == '__main__':
  devices, steps, updates, out = sys.argv[1:5]
  result = child(int(devices), int(steps), int(updates), out, sys.argv[5:])
  print('RESULT ' + json.dumps(result), flush=True)
