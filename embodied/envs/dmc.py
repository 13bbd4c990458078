"""DeepMind Control Suite as dmc_<domain>_<task>, e.g. dmc_walker_walk.

Options (config env.dmc): proprio (one float32 vector key per dm_control
observation, scalars as shape (1,)), image (uint8 'image' at env.size from
camera `camera`, -1 picks the DreamerV3 default per domain), repeat (action
repeat; rewards are summed). Suite tasks last 1000 env steps, 500 agent steps
with repeat 2, and end by time limit: is_last without is_terminal. A
termination (discount 0, e.g. lqr) sets is_terminal.

Headless rendering: MUJOCO_GL is respected when set. Otherwise egl is tried,
then osmesa, each in a short subprocess before dm_control is imported (it
reads MUJOCO_GL once); the choice goes into os.environ so that env workers
inherit it.
"""

import contextlib
import os
import subprocess
import sys

import elements
import numpy as np

from . import MissingPackageError, OptionError, UnknownTaskError
from .from_dm import FromDM

# Action repeat 2, the DMC setting of the Dreamer papers (their budgets count
# env steps, two per agent step); the reference code's default is 1. Not
# compared in learning runs here (see docs/results.md).
OPTIONS = {'repeat': 2, 'proprio': True, 'image': True, 'camera': -1}
SHAPE_OPTIONS = ('proprio', 'image')  # A run cannot resume with others.
RANGES = ((r'env\.dmc\.repeat', 'int', 1, None),
          (r'env\.dmc\.camera', 'int', -1, None))
# Cameras used by DreamerV3: the quadruped's default camera 0 is too far.
CAMERAS = {'quadruped': 2}
RESERVED = ('image', 'reward', 'is_first', 'is_last', 'is_terminal', 'reset')
INSTALL = 'dmc tasks need dm_control: pip install -r requirements-envs.txt'

_PROBE = (
    'from dm_control import mujoco\n'
    'mujoco.Physics.from_xml_string("<mujoco/>").render(8, 8)\n')


def make(name, *, seed=0, size=(64, 64), **kwargs):
  unknown = sorted(set(kwargs) - set(OPTIONS))
  if unknown:
    raise OptionError(
        f"Unknown option env.dmc.{unknown[0]}: dmc takes {', '.join(OPTIONS)}")
  options = {**OPTIONS, **kwargs}
  for key in ('proprio', 'image'):
    if not isinstance(options[key], bool):
      raise OptionError(
          f'env.dmc.{key} must be True or False, got {options[key]!r}')
  if not options['proprio'] and not options['image']:
    raise OptionError('env.dmc.proprio and env.dmc.image are both False: '
                      'the agent would observe nothing')
  for key, low in (('repeat', 1), ('camera', -1)):
    value = options[key]
    if not isinstance(value, int) or isinstance(value, bool) or value < low:
      raise OptionError(
          f'env.dmc.{key} must be an integer >= {low}, got {value!r}')
  if len(size) != 2 or min(size) < 1:
    raise OptionError(f'env.size must be (height, width), got {size!r}')
  suite = _import(options['image'])
  tasks = {f'{d}_{t}': (d, t) for d, t in suite.ALL_TASKS}
  if name not in tasks:
    raise UnknownTaskError(
        f"Unknown task 'dmc_{name}': dm_control has "
        f"{', '.join(sorted('dmc_' + t for t in tasks))}")
  domain, task = tasks[name]
  env = suite.load(domain, task, task_kwargs={'random': seed})
  return DMC(env, domain=domain, size=size, **options)


def select_renderer(image=True):
  """Sets MUJOCO_GL if unset: egl, else osmesa, else (no image) disable."""
  if os.environ.get('MUJOCO_GL') or 'dm_control._render' in sys.modules:
    return os.environ.get('MUJOCO_GL')
  errors = []
  for backend in ('egl', 'osmesa'):
    env = {**os.environ, 'MUJOCO_GL': backend}
    env.pop('PYOPENGL_PLATFORM', None)
    try:
      result = subprocess.run(
          [sys.executable, '-c', _PROBE], env=env, capture_output=True,
          text=True, timeout=120)
    except subprocess.TimeoutExpired:
      errors.append(f'{backend}: timed out')
      continue
    if result.returncode == 0:
      os.environ['MUJOCO_GL'] = backend
      return backend
    lines = result.stderr.strip().splitlines() or ['failed']
    errors.append(f'{backend}: {lines[-1]}')
  if image:
    raise MissingPackageError(
        'dmc images need headless OpenGL and neither egl nor osmesa works '
        f"({'; '.join(errors)}): apt-get install libegl1 or libosmesa6 (and "
        'set MUJOCO_GL), or set env.dmc.image False')
  # Proprio only: no rendering needed, so skip the GL imports altogether.
  os.environ['MUJOCO_GL'] = 'disable'
  return 'disable'


def _import(image):
  try:
    import dm_control  # noqa: F401  Checks the install before probing GL.
  except ImportError as e:
    raise MissingPackageError(f'{INSTALL} ({e})') from None
  select_renderer(image)
  with mujoco_imports(('dm_control', 'mujoco'), INSTALL):
    from dm_control import suite
  return suite


@contextlib.contextmanager
def mujoco_imports(packages, install):
  """Imports of a suite that renders with MuJoCo: a missing one of
  `packages` becomes a MissingPackageError saying `install`, any other
  failure (a broken GL backend fails at import time) one naming the
  rendering library."""
  try:
    yield
  except ImportError as e:
    if (e.name or '').split('.')[0] in packages:
      raise MissingPackageError(f'{install} ({e})') from None
    raise _render_error(e) from None
  except Exception as e:
    raise _render_error(e) from None


def prepare_rendering(suite, install):
  """For suites that render with MuJoCo through dm_control: checks that
  dm_control imports, then picks a headless GL backend; each failure is a
  MissingPackageError saying what to install."""
  try:
    import dm_control  # noqa: F401  Checks the install before probing GL.
  except ImportError as e:
    raise MissingPackageError(f'{install} ({e})') from None
  try:
    select_renderer(image=True)
  except MissingPackageError:
    raise MissingPackageError(
        f'{suite} renders with MuJoCo and neither egl nor osmesa works here: '
        'apt-get install libegl1 or libosmesa6 (and set MUJOCO_GL)') from None


def _render_error(e):
  backend = os.environ.get('MUJOCO_GL')
  return MissingPackageError(
      f'dm_control cannot set up rendering with MUJOCO_GL={backend} '
      f'({type(e).__name__}: {e}): install its library (libegl1 for egl, '
      'libosmesa6 for osmesa) or choose another MUJOCO_GL')


class DMC(FromDM):
  """A dm_control task: its proprioceptive vectors (flattened; keys that
  clash with ours get an obs_ prefix) and/or an env.size RGB render."""

  def __init__(
      self, env, domain='', size=(64, 64), repeat=2, proprio=True,
      image=True, camera=-1):
    super().__init__(env, repeat)
    self._size = tuple(int(x) for x in size)
    self._image = image
    self._camera = CAMERAS.get(domain, 0) if camera == -1 else camera
    # dm_control key -> our key; scalars and matrices become flat vectors.
    self._keys = {}
    self._shapes = {}
    if proprio:
      for key, spec in env.observation_spec().items():
        ours = f'obs_{key}' if key in RESERVED else key
        self._keys[key] = ours
        self._shapes[ours] = (int(np.prod(spec.shape)),)
    if image:
      try:
        self._render()
      except Exception as e:
        raise _render_error(e) from None

  def _spaces(self):
    spaces = {}
    if self._image:
      spaces['image'] = elements.Space(np.uint8, (*self._size, 3))
    for key, shape in self._shapes.items():
      spaces[key] = elements.Space(np.float32, shape)
    return spaces

  def _observe(self, timestep):
    obs = {}
    if self._image:
      obs['image'] = self._image_obs(timestep)
    for key, ours in self._keys.items():
      obs[ours] = np.asarray(
          timestep.observation[key], np.float32).reshape(self._shapes[ours])
    return obs

  def _image_obs(self, timestep):
    """The image of this step: rendered here (subclasses may read it from
    the timestep instead)."""
    del timestep
    return self._render()

  def _render(self):
    height, width = self._size
    return self._env.physics.render(height, width, camera_id=self._camera)
