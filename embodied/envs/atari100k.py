"""Atari 100k: atari100k_<game>, the data-efficient Atari protocol.

The same env as atari.py with these defaults: no sticky actions and RGB
frames (at env.size, 64x64 by default), the game's minimal action set. The benchmark allows 1e5 agent steps,
which are 400k frames at the action repeat of 4. Options come from
config.env.atari100k and take the keys that config.env.atari takes.
"""

from . import atari

PROTOCOL = dict(sticky=0.0, gray=False, actions='needed')
SHAPE_OPTIONS = atari.SHAPE_OPTIONS
RANGES = atari.ranges('atari100k')


def make(name, *, seed=0, size=(64, 64), **kwargs):
  return atari.make(
      name, seed=seed, size=size, suite='atari100k', **{**PROTOCOL, **kwargs})
