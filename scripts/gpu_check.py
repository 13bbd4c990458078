"""The prepared GPU check: versions and devices, the GPU-relevant tests,
train throughput in bfloat16 and float32, and a short Atari100k learning
curve over the published one, in one command within a time budget.

On a machine with the package registry, once per checkout (wheels for the
GPU machine's Python 3.12 and the published curve, into .gpu/, which git
ignores):
  python scripts/gpu_check.py --prepare
On the GPU machine (the device tool: command `python3 scripts/gpu_check.py
--out $OUT`, carry ['.gpu'], timeout_s 600):
  python3 scripts/gpu_check.py --out OUT [--budget 540]
The CPU dry run of every stage with tiny sizes (part of the test suite):
  python scripts/gpu_check.py --cpu --out /tmp/gpu_dry --budget 240

Writes to OUT: summary.md (versions, devices and every figure), tests.log,
bench.log, train.log, scores.txt and curve.png. Stages run in order of
value (throughput, tests, curve); each gets at most its cap and what is
left of the budget, a failing stage is recorded and the next one runs.
"""

import argparse
import json
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent
PREPARED = ROOT / '.gpu'
BASELINE = 'atari100k-dreamerv3.json.gz'
# What the GPU machine lacks (it has jax, optax, numpy, pillow, matplotlib,
# pytest, cloudpickle, msgpack, psutil): our pure-Python dependencies and
# the Atari emulator.
WHEELS = ('ninjax==3.6.3', 'elements==3.22.4', 'portal==3.8.3',
          'ruamel.yaml==0.19.1', 'gymnasium==1.4.0',
          'farama-notifications==0.0.4', 'ale-py==0.12.1')
PLATFORMS = ('manylinux_2_28_x86_64', 'manylinux_2_27_x86_64',
             'manylinux_2_17_x86_64', 'manylinux2014_x86_64',
             'manylinux1_x86_64')
TESTS = ['tests/test_bfloat16.py', 'tests/test_numerics.py',
         'tests/test_device_replay.py', 'tests/test_agent.py']

# Stage sizes on the GPU and in the CPU dry run.
GPU = dict(
    bench=['train', '--configs', 'atari100k', 'size12m',
           '--bench.updates', '20', '--bench.env_steps', '4000',
           '--bench.flops', 'False'],
    train=['--configs', 'atari100k', 'size12m'],
    # Seen on an H200: bench16 107 s with the four data paths, float32 ~90
    # s, 8 seeds past 110 s (its compile), the tests slow (GPU compiles).
    tests=TESTS, caps=dict(bench16=115, seeds8=170, bench32=85, tests=100),
    seeds=8, seed_env_steps=1000, min_train=75, stop=None,
    # Seconds kept from the stages before it for the run and its plot.
    reserve=110)
CPU = dict(
    bench=['train', '--configs', 'debug', '--task', 'dummy_vector',
           '--bench.updates', '2', '--bench.env_steps', '200',
           '--bench.flops', 'False', '--bench.warmup', '2'],
    train=['--configs', 'atari100k', 'debug', '--env.size', '16,16',
           '--run.train_ratio', '32', '--agent.enc.mults', '2,2',
           '--agent.dec.mults', '2,2', '--env.atari100k.max_frames', '100'],
    tests=['tests/test_numerics.py', '-k', 'lambda_return_vs_loop'],
    caps=dict(bench16=90, seeds8=90, bench32=0, tests=60), seeds=2,
    seed_env_steps=200,
    min_train=60,
    # A fixed length: the dry run checks the stage, not a duration.
    stop=['--run.steps', '150'], reserve=0)


def prepare():
  """Downloads the wheels and copies the published curve into .gpu/."""
  wheels = PREPARED / 'wheels'
  wheels.mkdir(parents=True, exist_ok=True)
  cmd = [sys.executable, '-m', 'pip', 'download', '--no-deps',
         '--only-binary=:all:', '--python-version', '3.12',
         '--implementation', 'cp', '-d', str(wheels)]
  for platform in PLATFORMS:
    cmd += ['--platform', platform]
  subprocess.run(cmd + list(WHEELS), check=True)
  baseline = ROOT.parent / 'shared' / 'baselines' / BASELINE
  if baseline.exists():
    shutil.copy(baseline, PREPARED / BASELINE)
  exclude = ROOT / '.git' / 'info' / 'exclude'
  if exclude.parent.exists() and '/.gpu/' not in (
      exclude.read_text() if exclude.exists() else ''):
    with exclude.open('a') as f:
      f.write('/.gpu/\n')
  size = sum(p.stat().st_size for p in PREPARED.rglob('*') if p.is_file())
  print(f'Prepared {PREPARED} ({size / 2 ** 20:.1f} MiB): carry .gpu')


# Modules of the wheels above.
MODULES = ('ninjax', 'elements', 'portal', 'ruamel.yaml', 'gymnasium',
           'ale_py')


def install_wheels(env):
  """Installs the carried wheels into a private folder on PYTHONPATH,
  where any of their modules is missing."""
  import importlib.util
  def absent(name):
    try:  # find_spec of 'a.b' raises when 'a' itself is missing.
      return importlib.util.find_spec(name) is None
    except ModuleNotFoundError:
      return True
  missing = [m for m in MODULES if absent(m)]
  if not missing:
    return 'all dependencies installed'
  wheels = sorted((PREPARED / 'wheels').glob('*.whl'))
  if not wheels:
    return f'missing {", ".join(missing)} and no carried wheels'
  target = pathlib.Path('/tmp/dreamer_site')
  subprocess.run(
      [sys.executable, '-m', 'pip', 'install', '-q', '--no-index',
       '--no-deps', '--no-compile', '--upgrade', '--target', str(target)] +
      [str(w) for w in wheels], check=True)
  env['PYTHONPATH'] = os.pathsep.join(
      [str(target), env.get('PYTHONPATH', '')]).rstrip(os.pathsep)
  return f'installed {len(wheels)} wheels into {target}'


class Budget:

  def __init__(self, seconds):
    self.end = time.time() + seconds

  def left(self, reserve=0):
    return max(0.0, self.end - time.time() - reserve)


def run(cmd, log, timeout, env):
  """Runs cmd with its output appended to log as it comes (a call killed
  at its limit still returns it); returns (exit code or 'timeout',
  seconds, output)."""
  start = time.time()
  with open(log, 'a') as f:
    f.write(f'\n$ {" ".join(cmd)}\n')
    f.flush()
    begin = f.tell()
    try:
      code = subprocess.run(
          cmd, cwd=ROOT, env=env, stdout=f, stderr=subprocess.STDOUT,
          timeout=max(1, timeout)).returncode
    except subprocess.TimeoutExpired:
      code = 'timeout'
  with open(log) as f:
    f.seek(begin)
    output = f.read()
  return code, time.time() - start, output


def versions(env):
  code = ('import sys, jax, jaxlib, numpy; '
          'from importlib import metadata; '
          'print("python", sys.version.split()[0]); '
          'print("jax", jax.__version__, "jaxlib", jaxlib.__version__, '
          '"numpy", numpy.__version__); '
          '[print(d.metadata["Name"], d.version) for d in '
          'metadata.distributions() if "jax-cuda" in d.metadata["Name"]]; '
          'print("devices", jax.devices())')
  out = subprocess.run([sys.executable, '-c', code], env=env, cwd=ROOT,
                       capture_output=True, text=True, timeout=120)
  lines = (out.stdout + out.stderr).strip().splitlines()
  smi = shutil.which('nvidia-smi')
  if smi:
    gpu = subprocess.run([smi, '-L'], capture_output=True, text=True)
    lines += gpu.stdout.strip().splitlines()
  return lines


def bench_results(output):
  for line in output.splitlines():
    if line.startswith('JSON '):
      return json.loads(line[5:])
  return None


def fmt(value):
  if isinstance(value, float):
    return f'{value:,.3f}' if abs(value) < 100 else f'{value:,.1f}'
  return str(value)


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--out', default='')
  parser.add_argument('--prepare', action='store_true')
  parser.add_argument('--cpu', action='store_true',
                      help='dry run of every stage on the CPU, tiny sizes')
  parser.add_argument('--budget', type=float, default=540,
                      help='seconds for all stages together')
  args = parser.parse_args(argv)
  if args.prepare:
    prepare()
    return 0
  if not args.out:
    parser.error('--out is required')
  budget = Budget(args.budget)
  out = pathlib.Path(args.out)
  out.mkdir(parents=True, exist_ok=True)
  sizes = CPU if args.cpu else GPU
  env = dict(os.environ, PYTHONUNBUFFERED='1')
  if args.cpu:
    env['JAX_PLATFORMS'] = 'cpu'
  summary = ['# GPU check', '', f'Started {time.strftime("%Y-%m-%d %H:%M")}'
             f' UTC, budget {args.budget:.0f} s, '
             f'{"CPU dry run" if args.cpu else "GPU"}.', '']
  summary += ['## Versions and devices', '', '```',
              install_wheels(env), *versions(env), '```', '']
  platform = ['--jax.platform', 'cpu'] if args.cpu else []
  py = sys.executable
  # A stage's seconds: its cap, within what the later run and plot leave.
  limit = lambda stage: min(
      sizes['caps'][stage], budget.left(sizes['reserve']))

  # Throughput: bfloat16 with the four data paths, N seeds as one program
  # in bfloat16, then float32.
  rows = []
  seeds = sizes['seeds']
  for name, label, extra in (
      ('bench16', 'bfloat16', ['--jax.compute_dtype', 'bfloat16',
                               '--bench.datapaths', 'True']),
      ('seeds8', f'bfloat16, {seeds} seeds', [
          '--jax.compute_dtype', 'bfloat16', '--run.seeds', str(seeds),
          '--bench.env_steps', str(sizes['seed_env_steps'])]),
      ('bench32', 'float32', ['--jax.compute_dtype', 'float32'])):
    if not sizes['caps'][name]:  # The dry run skips the float32 repeat.
      continue
    cmd = [py, 'scripts/bench.py', *sizes['bench'], *platform, *extra]
    code, secs, output = run(cmd, out / 'bench.log', limit(name), env)
    rows.append((label, code, secs, bench_results(output)))
    save(out, summary + throughput(sizes, rows))
  summary += throughput(sizes, rows)

  # The GPU-relevant tests.
  # Verbose: a stage stopped at its limit still names the tests it ran.
  cmd = [py, '-m', 'pytest', '-v', '-p', 'no:cacheprovider', *sizes['tests']]
  test_env = dict(env)
  if not args.cpu:
    # On an H200 each test took over 50 s, mostly compiling; the tests
    # check numbers, not speed, so skip XLA's autotuning (timing kernel
    # variants in every compile).
    test_env['XLA_FLAGS'] = (
        env.get('XLA_FLAGS', '') + ' --xla_gpu_autotune_level=0').strip()
  code, secs, output = run(cmd, out / 'tests.log', limit('tests'), test_env)
  last = (output.strip().splitlines() or ['(no output)'])[-1]
  summary += ['## Tests', '', f'`pytest {" ".join(sizes["tests"])}`: exit '
              f'{code} after {secs:.0f} s: {last} (tests.log)', '']
  save(out, summary)

  # A training run for what is left, then its curve over the published one.
  logdir = pathlib.Path(tempfile.mkdtemp(prefix='gpu_check_run_'))
  seconds = max(sizes['min_train'], int(budget.left() - 45))
  stop = sizes['stop'] or ['--run.duration', str(seconds)]
  cmd = [py, 'dreamerv3/main.py', *sizes['train'], *platform,
         '--logdir', str(logdir), *stop,
         '--run.log_every', '30', '--logger.outputs', 'terminal,jsonl',
         '--jax.cache_dir', '']
  code, secs, _ = run(cmd, out / 'train.log', seconds + 40, env)
  baseline = PREPARED / BASELINE
  cmd = [py, 'scripts/scores.py', str(logdir), '--plot',
         str(out / 'curve.png')]
  if baseline.exists():
    cmd += ['--baseline', str(baseline)]
  _, _, scores = run(cmd, out / 'scores.txt', 40, env)
  summary += ['## Learning curve', '',
              f'`dreamerv3/main.py {" ".join(sizes["train"] + stop)}`: exit '
              f'{code} after {secs:.0f} s (train.log); '
              'curve.png and scores.txt against '
              f'{BASELINE if baseline.exists() else "no published curve"}.',
              '', '```', *scores.strip().splitlines()[-15:], '```', '']
  if args.cpu:
    shutil.rmtree(logdir, ignore_errors=True)
  save(out, summary)
  print('\n'.join(summary))
  return 0


def save(out, lines):
  # After every stage: a command killed at its limit still returns the
  # figures of the stages that finished.
  (out / 'summary.md').write_text('\n'.join(lines))


def throughput(sizes, rows):
  """The throughput section: one column per bench run."""
  seeds = sizes['seeds']
  summary = ['## Train throughput', '',
              f'`scripts/bench.py {" ".join(sizes["bench"])}`: bfloat16, '
              f'{seeds} seeds as one program (`--run.seeds {seeds}`) and '
              'float32 (bench.log).', '']
  keys = []
  for _, _, _, res in rows:
    keys += [k for k in (res or {}) if k not in keys]
  summary.append('| figure | ' + ' | '.join(r[0] for r in rows) + ' |')
  summary.append('|---|' + '---|' * len(rows))
  summary.append('| exit | ' + ' | '.join(
      f'{r[1]} ({r[2]:.0f} s)' for r in rows) + ' |')
  for key in keys:
    summary.append(f'| {key} | ' + ' | '.join(
        fmt((r[3] or {}).get(key, '')) for r in rows) + ' |')
  summary.append('')
  return summary


if __name__ == '__main__':
  sys.exit(main())
