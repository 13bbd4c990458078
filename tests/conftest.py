"""Shared pytest setup: tests marked slow run only with --slow, tests marked
slurm (they start SLURM daemons on localhost) only with --slurm."""

import pytest

OPTIONS = {
    'slow': 'long test, skipped unless pytest runs with --slow',
    'slurm': 'needs root and slurm-wlm + munge installed; starts a local '
             'SLURM (scripts/slurm_local.sh); skipped unless pytest runs '
             'with --slurm',
}


def pytest_addoption(parser):
  parser.addoption(
      '--slow', action='store_true', default=False,
      help='also run tests marked slow (long learning or end-to-end runs)')
  parser.addoption(
      '--slurm', action='store_true', default=False,
      help='also run tests marked slurm (a real SLURM on localhost)')


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
