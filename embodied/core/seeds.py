"""The random streams of a run, all derived from its one seed.

Every consumer (the agent, each env, each replay sampler, each process of a
multi-host job) draws from its own stream of np.random.SeedSequence(seed),
named by a path such as ('env', 'eval', process, index): the path's parts
become the sequence's spawn key, so streams that differ in any part, or in
the seed, are independent. Arithmetic on the seed would not be: with
seed * 10007 + index, eval env 10000 + i of one seed met train envs of
another.
"""

import zlib

import numpy as np


def _key(path):
  key = []
  for part in path:
    if isinstance(part, str):
      key += [1, zlib.crc32(part.encode())]
    else:
      key += [0, int(part)]
  return tuple(key)


def stream(seed, *path):
  """An integer seed in [0, 2^31) for the stream `path` of run seed
  `seed` (libraries such as ALE take 31-bit seeds)."""
  sequence = np.random.SeedSequence(int(seed), spawn_key=_key(path))
  return int(sequence.generate_state(1, np.uint32)[0] >> 1)
