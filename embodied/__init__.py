"""embodied: environments, replay, driver and run loops for world-model RL.

Floors (a floor imports only from floors below it):
  run/, envs/  ->  jax/  ->  core/   (core is NumPy only, no JAX)
"""

from .core import *  # noqa: F401,F403
