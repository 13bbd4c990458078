"""Shared pytest setup: tests marked slow run only with --slow, tests marked
slurm (they start SLURM daemons on localhost) only with --slurm, tests
marked docker (they build the image and run it) only with --docker; the
short run that the tool and benchmark tests share."""

import json
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
# The smallest agent on images: what the script tests run.
TINY = ['--configs', 'debug', '--task', 'dummy_block', '--env.size', '16,16',
        '--agent.enc.mults', '2,2', '--agent.dec.mults', '2,2']

OPTIONS = {
    'slow': 'long test, skipped unless pytest runs with --slow',
    'slurm': 'needs root and slurm-wlm + munge installed; starts a local '
             'SLURM (scripts/slurm_local.sh); skipped unless pytest runs '
             'with --slurm',
    'docker': 'needs root, a Docker daemon and debootstrap; builds the image '
              'on a local Debian base and runs it; skipped unless pytest '
              'runs with --docker',
}


def pytest_addoption(parser):
  parser.addoption(
      '--slow', action='store_true', default=False,
      help='also run tests marked slow (long learning or end-to-end runs)')
  parser.addoption(
      '--slurm', action='store_true', default=False,
      help='also run tests marked slurm (a real SLURM on localhost)')
  parser.addoption(
      '--docker', action='store_true', default=False,
      help='also run tests marked docker (a real image build and run)')


def pytest_configure(config):
  for name, text in OPTIONS.items():
    config.addinivalue_line('markers', f'{name}: {text}')


def pytest_collection_modifyitems(config, items):
  for name in OPTIONS:
    if config.getoption(f'--{name}'):
      continue
    skip = pytest.mark.skip(reason=f'{name} test: run pytest with --{name}')
    for item in items:
      if name in item.keywords:
        item.add_marker(skip)


@pytest.fixture(scope='session')
def jax_cache(tmp_path_factory):
  """A compilation cache for the processes that the script tests start
  with TINY's agent: each program compiles once per session."""
  return tmp_path_factory.mktemp('jax_cache')


@pytest.fixture(scope='session')
def tiny_run(tmp_path_factory, jax_cache):
  """(logdir, JSON of the command) of a finished short run with a
  checkpoint, replay and TensorBoard logs, made by the benchmark that runs
  main.py and summarises its logs."""
  root = tmp_path_factory.mktemp('bench_parallel')
  # Long enough for a few log lines once the programs are compiled.
  cmd = [sys.executable, 'scripts/bench.py', 'parallel', '--bench.root',
         str(root), '--bench.scripts', 'train', *TINY,
         '--run.steps', '1500', '--run.log_every', '1',
         '--logger.outputs', 'terminal,jsonl,tensorboard',
         '--jax.cache_dir', str(jax_cache)]
  proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True,
                        timeout=600)
  assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
  line = [l for l in proc.stdout.splitlines() if l.startswith('JSON ')][-1]
  return root / 'train-0', json.loads(line[len('JSON '):])
