"""Memory Maze (Pasukonis et al. 2022) as memmaze_<size>: memmaze_9x9,
memmaze_11x11, memmaze_13x13, memmaze_15x15.

The package's standard tasks (those of its MemoryMaze-<size>-v0 gym ids): a
64x64 RGB egocentric 'image' with the colour of the current target as its
border, 6 discrete actions (noop, forward, left, right, forward-left,
forward-right), reward +1 per target reached. Episodes end by the package's
time limit, 1000, 2000, 3000 and 4000 steps for 9x9 to 15x15: is_last
without is_terminal. The seed fixes the mazes of all episodes. envs.make
resizes the image to env.size. No options.

MuJoCo renders headless with the MUJOCO_GL choice of dmc.py (egl, else
osmesa, unless set), made before memory_maze is imported because it sets
egl itself when MUJOCO_GL is unset.
"""

import contextlib
import io

import elements
import numpy as np

from . import OptionError, UnknownTaskError
from .dmc import mujoco_imports, prepare_rendering
from .from_dm import FromDM

# Task name -> constructor in memory_maze.tasks.
SIZES = {
    '9x9': 'memory_maze_9x9',
    '11x11': 'memory_maze_11x11',
    '13x13': 'memory_maze_13x13',
    '15x15': 'memory_maze_15x15',
}
INSTALL = (
    'memmaze tasks need memory-maze, dm_control and gym (memory_maze imports '
    'it): pip install -r requirements-envs.txt')
PACKAGES = ('memory_maze', 'gym', 'dm_control', 'dm_env', 'mujoco', 'labmaze')


def make(name, *, seed=0, size=None, **kwargs):
  del size  # The package renders 64x64; the standard wrapper resizes.
  if name not in SIZES:
    raise UnknownTaskError(
        f"Unknown task 'memmaze_{name}': memmaze has "
        f"{', '.join('memmaze_' + k for k in SIZES)}")
  if kwargs:
    raise OptionError(
        f'Unknown option env.memmaze.{sorted(kwargs)[0]}: memmaze takes none')
  tasks = _import()
  env = getattr(tasks, SIZES[name])(seed=seed, image_only_obs=True)
  return MemoryMaze(env)


def _import():
  prepare_rendering('memmaze', INSTALL)
  # gym prints a deprecation notice on import, memory_maze a note when gym
  # is missing; env workers would repeat them.
  quiet = io.StringIO()
  with mujoco_imports(PACKAGES, INSTALL), contextlib.redirect_stdout(
      quiet), contextlib.redirect_stderr(quiet):
    from memory_maze import tasks
  return tasks


class MemoryMaze(FromDM):
  """Adapts a memory_maze dm_env task with an image-only observation and
  discrete actions."""

  def __init__(self, env):
    spec = env.observation_spec()
    if not (hasattr(spec, 'shape') and len(spec.shape) == 3):
      raise NotImplementedError(
          f'MemoryMaze needs an image-only observation, got {spec}')
    super().__init__(env)
    self._shape = tuple(int(x) for x in spec.shape)

  def _spaces(self):
    return {'image': elements.Space(np.uint8, self._shape)}

  def _observe(self, timestep):
    return {'image': np.asarray(timestep.observation, np.uint8)}
