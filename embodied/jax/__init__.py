"""Generic JAX pieces: layers, output distributions, optimizer and the
jitted, sharded agent wrapper. Knows nothing of DreamerV3."""

from . import functional, nets, opt, outs
from .agent import COMPUTE_DTYPES, PLATFORMS, Agent, PlatformError, setup
