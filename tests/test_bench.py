"""scripts/bench.py: the shared option parsing, timer and output, every
docstring example and --help, and each subcommand run at the smallest sizes
(its JSON line's keys, finite figures, and what the figures must satisfy).
Nothing is asserted about speed. The subcommands that build an agent run as
the user runs them, in a process of their own, with the compilation cache
of the session (conftest.py), so programs shared with the other script
tests compile once."""

import json
import math
import pathlib
import re
import subprocess
import sys
import time

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from scripts import bench  # noqa: E402
from scripts.benchmarks import common, parallel  # noqa: E402
from tests.conftest import TINY  # noqa: E402


def busy(seconds):
  end = time.process_time() + seconds
  while time.process_time() < end:
    pass


def json_line(text):
  lines = [l for l in text.splitlines() if l.startswith('JSON ')]
  assert len(lines) == 1, text[-3000:]
  return json.loads(lines[0][len('JSON '):])


def run_bench(*args, cache):
  """Runs bench.py in its own process; returns its JSON object."""
  proc = subprocess.run(
      [sys.executable, 'scripts/bench.py', *args, '--jax.cache_dir',
       str(cache)], cwd=ROOT, capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
  return json_line(proc.stdout)


def check(result, keys):
  """Every key present; every number finite."""
  missing = [k for k in keys if k not in result]
  assert not missing, (missing, result)
  for key, value in result.items():
    if isinstance(value, (int, float)) and not isinstance(value, bool):
      assert math.isfinite(value), (key, value)


# Shared parts.

def test_time_calls_counts_work_as_cpu_time():
  wall, cpu = common.time_calls(lambda: busy(0.02), 5)
  # At least the work done; steal time can only add wall time.
  assert cpu >= 0.02
  assert wall >= 0.8 * cpu
  assert cpu < 0.2


def test_time_calls_does_not_count_waiting_as_cpu_time():
  wall, cpu = common.time_calls(lambda: time.sleep(0.05), 4)
  assert wall >= 0.05
  # Sleeping keeps no core busy (the bound leaves room for the loop).
  assert cpu / wall < 0.3


def test_split_args_types_options_and_keeps_config_flags():
  options, rest = bench.split_args('train', [
      '--configs', 'debug', '--bench.updates', '3', '--bench.flops', 'False',
      '--batch_size', '8', '--bench.json', '/tmp/x.json'])
  assert options['updates'] == 3 and options['flops'] is False
  assert options['env_steps'] == 2000  # Untouched default.
  assert options['json'] == '/tmp/x.json'
  assert rest == ['--configs', 'debug', '--batch_size', '8']
  options, _ = bench.split_args('replay', ['--bench.items', '1e5'])
  assert options['items'] == 100000 and isinstance(options['items'], int)
  options, _ = bench.split_args('env', ['--bench.seconds', '2'])
  assert options['seconds'] == 2.0


@pytest.mark.parametrize('argv, message', [
    (['--bench.update', '3'], 'Unknown option --bench.update'),
    (['--bench.updates'], 'needs a value'),
    (['--bench.flops', 'no'], 'True or False'),
    (['--bench.updates', '2.5'], 'takes an integer'),
    (['--bench.updates', 'inf'], 'takes an integer'),
    (['--bench.updates', 'many'], 'takes an integer'),
])
def test_split_args_refuses_bad_options(argv, message):
  with pytest.raises(SystemExit, match=message):
    bench.split_args('train', argv)


def test_unknown_subcommand_refused():
  with pytest.raises(SystemExit, match='Unknown subcommand'):
    bench.main(['speed'])


@pytest.mark.parametrize('name', bench.SUBCOMMANDS)
def test_help_lists_every_option(name, capsys):
  assert bench.main([name, '--help']) is None
  out = capsys.readouterr().out
  module = bench.load(name)
  for key in [*module.OPTIONS, 'json']:
    assert f'--bench.{key} ' in out, key
  assert f'python scripts/bench.py {name}' in out


def examples():
  """Every `python scripts/bench.py ...` command in the docstrings."""
  docs = [bench.__doc__] + [bench.load(n).__doc__ for n in bench.SUBCOMMANDS]
  text = '\n'.join(docs).replace('\\\n', ' ')
  found = re.findall(r'python scripts/bench\.py (\w+)([^\n`]*)', text)
  return [(name, args) for name, args in found if name != 'SUBCOMMAND']


def test_docstring_examples_parse():
  import shlex
  from dreamerv3 import main as dmain
  commands = examples()
  assert len(commands) >= 20
  blocks = dmain.load_blocks()
  for name, args in commands:
    assert name in bench.SUBCOMMANDS, name
    argv = shlex.split(args)
    if '--help' in argv:
      continue
    options, flags = bench.split_args(name, argv)
    dmain.parse(flags, blocks)
    if name == 'ab':
      dmain.parse(flags + shlex.split(options['variant']), blocks)


def test_results_table_and_json_file(tmp_path, capsys):
  path = tmp_path / 'out.json'
  common.finish({'a': 1.23456, 'b': 'x', 'c': None, 'd[k]': 1234.56789,
                 'e': 1.234567e-8, 'f': 0.0, 'g': 3}, str(path))
  out = capsys.readouterr().out
  assert '  a ' in out and '1.235' in out and '1,234.6' in out
  assert '1.23e-08' in out
  want = {'a': 1.2346, 'b': 'x', 'c': None, 'd[k]': 1234.5679,
          'e': 1.235e-8, 'f': 0.0, 'g': 3}
  assert json_line(out) == want
  assert json.loads(path.read_text()) == want


# Subcommands.

def test_train(jax_cache, tmp_path):
  path = tmp_path / 'train.json'
  result = run_bench(
      'train', *TINY, '--bench.updates', '2', '--bench.env_steps', '40',
      '--bench.warmup', '1', '--bench.flops', 'False', '--bench.json',
      str(path), cache=jax_cache)
  check(result, [
      'task', 'platform', 'dtype', 'batch', 'env_steps_per_s', 'init_s',
      'params', 'compile_policy_s', 'policy_steps_per_s', 'compile_train_s',
      'learner_wait_frac', 'learner_dispatch_frac', 'updates_per_s',
      'cpu_s_per_update', 'cores_busy', 'replayed_steps_per_s', 'peak_rss_gb', 'peak_device_gb', 'recompiles'])
  assert result['task'] == 'dummy_block' and result['batch'] == '4x8'
  assert result['recompiles'] == 'none' and result['params'] > 1000
  assert result['replayed_steps_per_s'] == pytest.approx(
      32 * result['updates_per_s'], rel=1e-3)
  assert 'gflop_per_s' not in result  # --bench.flops False.
  assert json.loads(path.read_text()) == result


def test_ab(jax_cache):
  # The seed changes no program: both arms reuse the session's compiles.
  result = run_bench(
      'ab', *TINY, '--bench.variant', '--seed 1', '--bench.rounds', '2',
      '--bench.warmup', '1', '--bench.steps', '60', cache=jax_cache)
  check(result, [
      'base', 'variant', 'rounds', 'base_s_per_update',
      'variant_s_per_update', 'variant_throughput_vs_base',
      'base_cpu_s_per_update', 'variant_cpu_s_per_update',
      'variant_cpu_vs_base'])
  assert result['variant'].endswith('--seed 1')
  assert result['base'] == result['variant'][:-len(' --seed 1')]
  # Up to the JSON's rounding to 4 significant digits.
  assert result['variant_throughput_vs_base'] == pytest.approx(
      result['base_s_per_update'] / result['variant_s_per_update'],
      rel=1e-3)


def test_members(jax_cache):
  # One seed and two as one program: compile figures for both, the step's
  # CPU seconds per seed-update and their ratio.
  result = run_bench(
      'members', *TINY, '--bench.seeds', '1,2', '--bench.updates', '1',
      cache=jax_cache)
  keys = [f'{name}[{n}]' for n in (1, 2) for name in (
      'init_s', 'lower_s', 'compile_s', 'hlo_instructions', 'train_s',
      'train_cpu_s_per_seed')]
  check(result, keys + ['compile_vs_first[2]',
                        'train_cpu_per_seed_vs_first[2]', 'peak_rss_gb'])
  assert result['compile_vs_first[2]'] == pytest.approx(
      (result['lower_s[2]'] + result['compile_s[2]']) /
      (result['lower_s[1]'] + result['compile_s[1]']), rel=1e-3)
  assert result['train_cpu_per_seed_vs_first[2]'] == pytest.approx(
      result['train_cpu_s_per_seed[2]'] / result['train_cpu_s_per_seed[1]'],
      rel=1e-3)
  # The member axis adds a loop, not a copy of the program per member.
  assert 0 < result['hlo_instructions[1]'] <= result['hlo_instructions[2]']
  assert result['hlo_instructions[2]'] < 1.5 * result['hlo_instructions[1]']


def test_devices(jax_cache):
  # One device count: a second one would compile the step anew (~25 s);
  # tests/test_agent.py trains on 4 mock devices against 1.
  result = run_bench(
      'devices', *TINY, '--bench.devices', '1', '--bench.steps', '1',
      '--bench.updates', '1', cache=jax_cache)
  keys = ['compile_s', 'updates_per_s', 'cpu_s_per_update', 'recompiles',
          'max_abs_diff', 'max_abs_diff_opt']
  check(result, ['devices', 'steps', 'updates'] + [f'{k}[1]' for k in keys])
  assert result['max_abs_diff[1]'] == 0 and result['recompiles[1]'] == 0


def test_devices_differences_keep_optimizer_apart():
  import numpy as np
  from scripts.benchmarks import devices
  base = {'agent/w': np.zeros(3), 'agent/opt/nu': np.zeros(2)}
  other = {'agent/w': np.array([0, -2e-6, 1e-7]),
           'agent/opt/nu': np.array([0.5, 0])}
  assert devices.differences(base, other) == {
      'max_abs_diff': 2e-6, 'max_abs_diff_opt': 0.5}
  assert devices.differences(base, base) == {
      'max_abs_diff': 0, 'max_abs_diff_opt': 0}


def test_report(jax_cache):
  result = run_bench('report', *TINY, '--bench.calls', '1',
                     cache=jax_cache)
  check(result, [
      'train_batch', 'report_batch', 'videos', 'train_s', 'compile_train_s',
      'report_s', 'compile_report_s', 'report_vs_train',
      'peak_rss_gb[built]', 'peak_rss_gb[after_train]',
      'peak_rss_gb[after_report]', 'report_rss_added_gb'])
  # debug: 6 report sequences of 8 + 1 steps; videos from the images.
  assert result['report_batch'] == '6x9' and result['videos']
  assert result['report_rss_added_gb'] >= 0


def test_replay(jax_cache):
  result = run_bench(
      'replay', *TINY, '--bench.items', '2000', '--bench.ops', '50',
      '--bench.cache_items', '50', cache=jax_cache)
  check(result, [
      'items', 'batch', 'sumtree_ops_per_s', 'prioritized_ops_per_s',
      'choice_ops_per_s', 'sumtree_vs_choice', 'prioritized_vs_choice',
      'cache_items', 'compile_uncertainty_s', 'refresh_s', 'refresh_batches',
      'refresh_items_per_s'])
  assert result['items'] == 2000 and result['batch'] == '4x8'
  # Every item refreshed, in batches of batch_size windows (a window covers
  # one item or more).
  assert result['cache_items'] == 50
  assert 1 <= result['refresh_batches'] <= math.ceil(50 / 4)


def test_mask(capsys):
  result = bench.main([
      'mask', '--configs', 'debug', '--batch_size', '2', '--bench.image',
      '6,6,1', '--bench.repeats', '2'])
  assert json_line(capsys.readouterr().out) == {
      k: common.rounded(v) for k, v in result.items()}
  check(result, ['shape', 'k_steps', 'compile_s', 'mask_ms', 'seed_loop_s'])
  assert result['shape'] == [2, 8, 6, 6, 1] and result['k_steps'] == 3
  assert result['seed_loop_same'] is True


def test_env(capsys):
  result = bench.main([
      'env', '--configs', 'debug', '--task', 'dummy_vector',
      '--bench.seconds', '0.2', '--bench.envs', '2'])
  json_line(capsys.readouterr().out)
  check(result, ['task', 'obs', 'episodes[alone]', 'steps_per_s[alone]',
                 'steps_per_s[serial]', 'steps_per_s[parallel]'])
  assert result['steps_per_s[alone]'] > 0
  # debug: 20-step episodes, so a fifth of a second holds some.
  assert result['episodes[alone]'] > 0
  with pytest.raises(SystemExit, match="Unknown mode 'fast'"):
    bench.main(['env', '--bench.modes', 'alone,fast'])


def test_parallel(tiny_run):
  logdir, result = tiny_run
  check(result, ['wall_s[train-0]', 'lines[train-0]'])
  assert (logdir / 'metrics.jsonl').exists()
  # The run takes seconds here; a much faster machine may end it before a
  # second log line, and then there is no figure (the summary's arithmetic
  # is checked below).
  if result['lines[train-0]']:
    keys = ['env_fps', 'ups', 'learner_wait', 'host_share', 'steps']
    check(result, [f'{k}[train-0]' for k in keys])
    assert result['steps[train-0]'] <= 1500
    assert 0 <= result['learner_wait[train-0]'] <= 1


def test_parallel_summary_of_a_log(tmp_path):
  lines = [
      {'step': 10},
      {'step': 20, 'fps/env': 5.0, 'fps/train': 0.0},  # Prefill.
      {'step': 30, 'fps/env': 7.0, 'fps/train': 1.0},  # Compilation.
      {'step': 40, 'fps/env': 10.0, 'fps/train': 2.0,
       'parallel/learner_wait_frac': 0.2, 'learner/wait_frac': 0.1,
       'parallel/actor_wait_frac': 0.5},
      {'step': 50, 'episode/score': 1.0},
      {'step': 60, 'fps/env': 20.0, 'fps/train': 4.0,
       'parallel/learner_wait_frac': 0.4, 'learner/wait_frac': 0.3,
       'parallel/actor_wait_frac': 0.7}]
  (tmp_path / 'metrics.jsonl').write_text(
      ''.join(json.dumps(l) + '\n' for l in lines))
  out = parallel.summarize('parallel', tmp_path)
  assert out['lines'] == 2 and out['steps'] == 60
  assert out['env_fps'] == 15 and out['ups'] == 3
  assert out['learner_wait'] == pytest.approx(0.3)
  assert out['host_share'] == pytest.approx(0.2)
  assert out['parallel/actor_wait_frac'] == pytest.approx(0.6)
  assert out['replay/sample_wait'] == 0  # Not logged: 0.
  assert parallel.summarize('train', tmp_path)['learner_wait'] == 0
  (tmp_path / 'metrics.jsonl').write_text(json.dumps(lines[2]) + '\n')
  assert parallel.summarize('train', tmp_path) == {'lines': 0}
