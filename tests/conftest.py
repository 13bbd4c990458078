"""Shared pytest setup: tests marked slow run only with --slow."""

import pytest


def pytest_addoption(parser):
  parser.addoption(
      '--slow', action='store_true', default=False,
      help='also run tests marked slow (long learning or end-to-end runs)')


def pytest_configure(config):
  config.addinivalue_line(
      'markers', 'slow: long test, skipped unless pytest runs with --slow')


def pytest_collection_modifyitems(config, items):
  if config.getoption('--slow'):
    return
  skip = pytest.mark.skip(reason='slow test: run pytest with --slow')
  for item in items:
    if 'slow' in item.keywords:
      item.add_marker(skip)
