"""Every random stream of a run comes from np.random.SeedSequence(seed) by
name: streams of different consumers, indices, processes or seeds never
coincide."""

import numpy as np

from dreamerv3 import main
from embodied.core import seeds


def paths():
  """Every stream path a run uses (main.make_env, make_replay,
  make_agent), for up to 4 processes and 16 envs per role."""
  out = [('agent',)]
  for process in range(4):
    for role in ('train', 'eval'):
      out += [('env', role, process, i) for i in range(16)]
    for part in ('replay', 'uniform', 'priority', 'recency'):
      out.append(('replay', process, part))
  return out


def test_no_two_streams_of_seeds_0_to_9_coincide():
  values = [seeds.stream(seed, *path) for seed in range(10)
            for path in paths()]
  assert len(values) == 10 * len(paths())
  assert len(set(values)) == len(values)
  assert all(0 <= v < 2 ** 31 for v in values)


def test_streams_are_reproducible_and_spread():
  assert seeds.stream(3, 'env', 'eval', 0, 7) == seeds.stream(
      3, 'env', 'eval', 0, 7)
  # Arithmetic seeding put eval env 7 of seed s on train env 0 of s + 1.
  assert seeds.stream(0, 'env', 'eval', 0, 7) != seeds.stream(
      1, 'env', 'train', 0, 0)
  # The streams of consecutive seeds look independent: their first draws
  # spread uniformly (mean of 1000 uniforms within 4 standard errors).
  draws = [np.random.default_rng(seeds.stream(s, 'agent')).uniform()
           for s in range(1000)]
  assert abs(np.mean(draws) - 0.5) < 4 * np.sqrt(1 / 12 / 1000)


def test_envs_get_their_streams():
  config = main.parse(['--configs', 'debug', '--task', 'dummy_vector',
                       '--seed', '4'])

  def targets(env):  # Ten random targets of the dummy env.
    steps = [env.step({'reset': i == 0, 'action': 0}) for i in range(10)]
    return np.stack([s['vector'] for s in steps])
  train0 = targets(main.make_env(config, 0))
  again = targets(main.make_env(config, 0))
  eval0 = targets(main.make_env(config, 0, role='eval'))
  other = targets(main.make_env(config, 0, process=1))
  np.testing.assert_array_equal(train0, again)
  assert not np.array_equal(train0, eval0)
  assert not np.array_equal(train0, other)
