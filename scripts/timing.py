"""Timing and option parsing shared by the benchmark scripts."""

import time


def time_calls(fn, count):
  """Wall seconds and CPU seconds (all threads of the process) per call.
  CPU time is the steadier figure on a VM whose wall-clock speed swings
  with steal time; CPU over wall is the number of cores kept busy."""
  start, cpu_start = time.perf_counter(), time.process_time()
  for _ in range(count):
    fn()
  return ((time.perf_counter() - start) / count,
          (time.process_time() - cpu_start) / count)


def split_args(argv, defaults):
  """Separates --bench.KEY VALUE options (KEY in defaults, VALUE parsed as
  the default's type) from the config flags; returns (options, rest)."""
  bench, rest, i = dict(defaults), [], 0
  while i < len(argv):
    if argv[i].startswith('--bench.'):
      key = argv[i][len('--bench.'):]
      if key not in defaults:
        raise SystemExit(f'Unknown option --bench.{key}: {list(defaults)}')
      value, default = argv[i + 1], defaults[key]
      if isinstance(default, bool):
        bench[key] = value == 'True'
      elif isinstance(default, str):
        bench[key] = value
      else:
        bench[key] = type(default)(float(value))
      i += 2
    else:
      rest.append(argv[i])
      i += 1
  return bench, rest
