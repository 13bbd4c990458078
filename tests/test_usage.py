"""`main.py --help [PREFIX]` explains the command line from configs.yaml."""

import pathlib
import subprocess
import sys

from dreamerv3 import extensions, main, usage
from embodied import envs, run

ROOT = pathlib.Path(__file__).resolve().parent.parent


def test_comments_of_blocks_and_keys():
  text = '\n'.join([
      '# The defaults.',
      'defaults:',
      '  seed: 0',
      '  run:',
      '    # Steps to',
      '    # train for.',
      '    steps: 10',
      '    envs: 4  # envs in parallel',
      '',
      '# Not the block below.',
      '',
      'small:',
      '  run.envs: 1  # one env'])
  blocks, keys = usage.comments(text)
  assert blocks == {'defaults': 'The defaults.', 'small': ''}
  assert keys == {'run.steps': 'Steps to train for.',
                  'run.envs': 'envs in parallel'}


def test_help_lists_blocks_suites_scripts_and_extensions(capsys):
  main.main(['--help'])
  out = capsys.readouterr().out
  lines = out.splitlines()
  blocks = main.load_blocks()
  for name in blocks:
    if name != 'defaults':
      assert any(l.split()[:1] == [name] for l in lines), name
  # A block's comment, or what it sets where it has none.
  assert any(l.split()[:1] == ['cartpole'] and 'CartPole on CPU' in l
             for l in lines)
  assert any(l.split()[:1] == ['size12m'] and 'agent.dyn' in l
             for l in lines)
  for suite in envs.SUITES:
    assert any(l.split()[:1] == [suite] for l in lines), suite
  assert any('gym_CartPole-v1' in l and l.split()[0] == 'gym' for l in lines)
  for script in run.SCRIPTS:
    assert any(l.split()[:1] == [script] for l in lines), script
  for spec in extensions.BUILTIN:
    assert any(l.split()[:1] == [extensions.short(spec)] for l in lines)


def test_help_prefix_shows_keys_defaults_and_comments(capsys):
  main.main(['--help', 'replay'])
  out = capsys.readouterr().out
  config = main.parse([])
  replay_keys = [k for k in config.flat if k.startswith('replay.')]
  listed = [l.split()[0][2:] for l in out.splitlines() if l.startswith('--')]
  assert sorted(listed) == sorted(replay_keys)
  lines = out.splitlines()
  at = lines.index('--replay.recexp 1.0')
  assert lines[at + 1].strip().startswith('recency: p(item)')
  # A nested key without a comment of its own shows its parent's.
  at = lines.index('--replay.prio.exponent 0.8')
  assert lines[at + 1].strip().startswith('(see replay.prio) Item priority')


def test_help_all_lists_every_key_with_extension_comments(capsys):
  # The extensions' namespaces and comments come from their DEFAULTS.
  main.main(['--help', 'all'])
  out = capsys.readouterr().out
  listed = {l.split()[0][2:] for l in out.splitlines() if l.startswith('--')}
  assert set(main.parse([]).flat) <= listed
  lines = out.splitlines()
  at = lines.index('--priority.signal none')
  assert lines[at + 1].strip().startswith("The train step's per-step signal")
  assert '  --replay.priosignal = --priority.signal' in lines


def test_help_with_an_unknown_prefix_fails_with_one_line():
  out = subprocess.run(
      [sys.executable, 'dreamerv3/main.py', '--help', 'nope'], cwd=ROOT,
      capture_output=True, text=True, timeout=120)
  assert out.returncode == 2
  lines = out.stderr.strip().splitlines()
  assert len(lines) == 1 and "'nope'" in lines[0]
