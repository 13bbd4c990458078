"""The timing helper behind the benchmark scripts (scripts/timing.py): wall
and CPU seconds per call, and the --bench.* option parsing. (Running the
scripts themselves costs a minute of compilation; they assert nothing.)"""

import time

import pytest

from scripts.bench import split_args
from scripts.timing import time_calls


def busy(seconds):
  end = time.process_time() + seconds
  while time.process_time() < end:
    pass


def test_time_calls_counts_work_as_cpu_time():
  wall, cpu = time_calls(lambda: busy(0.02), 5)
  # At least the work done; steal time can only add wall time.
  assert cpu >= 0.02
  assert wall >= 0.8 * cpu
  assert cpu < 0.2


def test_time_calls_does_not_count_waiting_as_cpu_time():
  wall, cpu = time_calls(lambda: time.sleep(0.05), 4)
  assert wall >= 0.05
  # Sleeping keeps no core busy (the bound leaves room for the loop).
  assert cpu / wall < 0.3


def test_split_args_separates_bench_options_from_config():
  bench, rest = split_args([
      '--configs', 'debug', '--bench.updates', '3', '--bench.flops', 'False',
      '--batch_size', '8'])
  assert bench['updates'] == 3 and bench['flops'] is False
  assert bench['env_steps'] == 2000  # Untouched default.
  assert rest == ['--configs', 'debug', '--batch_size', '8']
  with pytest.raises(SystemExit, match='--bench.update'):
    split_args(['--bench.update', '3'])
