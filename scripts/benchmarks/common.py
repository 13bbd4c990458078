"""What every benchmark shares: the --bench.* options, the timer, peak
memory, the JAX setup, random actions and batches, and the results table
with its JSON line."""

import functools
import json
import math
import pathlib
import resource
import sys
import time

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parent.parent.parent

# Options of every subcommand: name -> (default, help).
COMMON = {'json': ('', 'also write the JSON object to this file')}


# Options.

def split_args(argv, options):
  """Separates --bench.KEY VALUE options (KEY in options, VALUE parsed as
  the type of its default) from the config flags; returns (values, rest)."""
  values = {k: v[0] for k, v in options.items()}
  rest, i = [], 0
  while i < len(argv):
    if not argv[i].startswith('--bench.'):
      rest.append(argv[i])
      i += 1
      continue
    key = argv[i][len('--bench.'):]
    if key not in options:
      raise SystemExit(f'Unknown option --bench.{key}; options: '
                       + ', '.join(f'--bench.{k}' for k in options))
    if i + 1 == len(argv):
      raise SystemExit(f'--bench.{key} needs a value')
    values[key] = parse_value(key, argv[i + 1], options[key][0])
    i += 2
  return values, rest


def parse_value(key, text, default):
  if isinstance(default, bool):
    if text not in ('True', 'False'):
      raise SystemExit(f'--bench.{key} takes True or False, got {text!r}')
    return text == 'True'
  if isinstance(default, str):
    return text
  try:
    number = float(text)  # Integers may be written as 1e6.
  except ValueError:
    number = None
  kind = type(default)
  if number is None or not math.isfinite(number) or (
      kind is int and number != int(number)):
    what = 'an integer' if kind is int else 'a finite number'
    raise SystemExit(f'--bench.{key} takes {what}, got {text!r}')
  return kind(number)


def usage(name, doc, options):
  lines = [f'python scripts/bench.py {name} [--bench.KEY VALUE ...] '
           '[config flags]', '', doc.strip(), '', 'Options:']
  for key, (default, text) in options.items():
    lines.append(f'  {f"--bench.{key} {default!r}":<32} {text}')
  return '\n'.join(lines)


# Measurement.

def time_calls(fn, count):
  """Wall seconds and CPU seconds (all threads of the process) per call.
  CPU time is the steadier figure on a VM whose wall-clock speed swings
  with steal time; CPU over wall is the number of cores kept busy."""
  start, cpu_start = time.perf_counter(), time.process_time()
  for _ in range(count):
    fn()
  return ((time.perf_counter() - start) / count,
          (time.process_time() - cpu_start) / count)


def peak_rss_gb():
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 ** 2


def peak_device_gb():
  """Peak memory in use on the first device, where JAX reports it (GPUs;
  None on CPUs)."""
  import jax
  stats = jax.local_devices()[0].memory_stats() or {}
  peak = stats.get('peak_bytes_in_use')
  return None if peak is None else peak / 1024 ** 3


# Config, JAX and random data.

def parse_config(flags):
  """The config a run with these flags would use (logdir unused), without
  the compilation cache unless the flags name one: compile times are among
  the figures."""
  sys.path.insert(0, str(ROOT))
  from dreamerv3 import main as dmain
  config = dmain.parse(['--jax.cache_dir', ''] + flags)
  return config.update(logdir='/tmp/bench_unused')


def setup_jax(config):
  """JAX as the config asks (as make_agent sets it up, so that it is set
  up once). Returns (platform, dtype)."""
  from dreamerv3 import main as dmain
  return dmain.setup_jax(config)


def spaces(config):
  """(obs_space, act_space) of the config's task."""
  from dreamerv3 import main as dmain
  env = dmain.make_env(config, 0)
  try:
    return env.obs_space, env.act_space
  finally:
    env.close()


def random_actions(act_space, count, rng):
  """count random actions per act_space key (except reset), batched."""
  out = {}
  for key, space in act_space.items():
    if key == 'reset':
      continue
    shape = (count, *space.shape)
    if space.discrete:
      out[key] = rng.integers(space.low, space.high, shape).astype(space.dtype)
    else:
      out[key] = rng.uniform(space.low, space.high, shape).astype(space.dtype)
  return out


def random_policy(act_space, seed=0):
  """A Driver policy that acts at random."""
  rng = np.random.default_rng(seed)

  def policy(carry, obs):
    return carry, random_actions(act_space, len(obs['is_first']), rng), {}
  return policy


def fill(config, replay, steps, seed=0):
  """Adds `steps` random env steps from the config's envs to replay."""
  import embodied
  from dreamerv3 import main as dmain
  fns = [functools.partial(dmain.make_env, config, i)
         for i in range(config.run.envs)]
  driver = embodied.Driver(fns, parallel=config.run.parallel_envs)
  driver.on_step(replay.add)
  driver.reset(lambda n: None)
  driver(random_policy(driver.act_space, seed), steps=steps)
  driver.close()


def random_batch(agent, seed, batch=None, length=None):
  """A batch of the agent's train shape (or batch x length) with random
  values in each space, an episode start in every row."""
  rng = np.random.default_rng(seed)
  data = agent._dummy_batch(batch, length)
  spaces = {**agent.obs_space, **agent.act_space, **agent.ext_space}
  for key, space in spaces.items():
    shape = data[key].shape
    if space.dtype == bool:
      data[key] = rng.uniform(size=shape) < 0.05
    elif np.issubdtype(space.dtype, np.integer):
      low = np.maximum(space.low.astype(np.int64), -100)
      high = np.minimum(space.high.astype(np.int64), 100)
      data[key] = rng.integers(low, np.maximum(high, low + 1), shape).astype(
          space.dtype)
    else:
      value = rng.normal(0, 0.5, shape)
      data[key] = np.clip(value, space.low, space.high).astype(space.dtype)
  data['is_first'][:, 0] = True
  data['stepid'] = rng.integers(0, 2 ** 31, data['stepid'].shape)
  return data


# Output.

def rounded(value):
  """Floats to 4 decimals, and small ones to 4 significant digits (a
  parameter difference of 1e-8 is a figure too)."""
  if not isinstance(value, float) or not math.isfinite(value) or not value:
    return value
  return round(value, max(4, 3 - math.floor(math.log10(abs(value)))))


def formatted(value):
  if not isinstance(value, float) or not math.isfinite(value):
    return value
  if value and abs(value) < 0.01:
    return f'{value:.3g}'
  return f'{value:,.3f}' if abs(value) < 100 else f'{value:,.1f}'


def finish(results, path=''):
  """Prints the results table and the JSON line (and writes it to path)."""
  print('\nBenchmark results')
  for key, value in results.items():
    print(f'  {key:28s} {formatted(value)}')
  line = json.dumps({k: rounded(v) for k, v in results.items()})
  print('JSON ' + line, flush=True)
  if path:
    pathlib.Path(path).expanduser().write_text(line + '\n')
