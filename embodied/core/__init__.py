"""Framework-free pieces: env interface and wrappers, driver, replay, samplers,
limiters. NumPy only, no JAX."""

from .base import Env, Wrapper
from .driver import Driver, EnvCrashError
from .limiters import RatioLimiter
from .replay import Replay, Stacked
from .samplers import Mixture, Prioritized, Recency, Sampler, Uniform
from .sumtree import SumTree

from . import wrappers
from .checkpoint import Checkpoint, CheckpointError
from .logdir_lock import LogdirBusy, LogdirLock
from .preempt import Preempted, Preemption
