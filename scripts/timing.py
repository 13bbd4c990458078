"""Timing shared by the benchmark scripts."""

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
