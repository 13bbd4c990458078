"""Locomotion navigation as loconav_<robot>_<maze>, e.g. loconav_ant_maze_s.

dm_control's locomotion tasks: a walker (robot `ant`, or `ball`, a rolling
ball with a head) in a fixed maze (`maze_s`, `maze_m`, `maze_l`, `maze_xl`,
the ASCII maps below) has to reach a target sphere. Reaching it gives reward
1 and respawns the walker at a random spawn cell ('P'), with the target at
the same goal cell ('G'), so the task repeats within an episode. The walls
of each maze quadrant have their own colour, so that views differ by place.

Observations: 'image', uint8 RGB at env.size from the walker's egocentric
camera (camera 'ego') or the maze's top-down camera ('top'); with proprio,
one float32 vector per walker observation (joints, sensors, body poses in
the walker frame), named without the 'walker/' prefix. Actions: the
walker's actuators, continuous in [-1, 1].

Options (config env.loconav): repeat (action repeat, rewards summed),
episode_length (env steps, 40 per simulated second; the end is is_last
without is_terminal), proprio, camera. An ant that flips over (dm_control's
aliveness below -0.5) terminates the episode: is_terminal. Rendering is
headless with the MUJOCO_GL choice of dmc.py. The seed fixes spawn cells
and initial poses of all episodes.
"""

import numpy as np

from . import MissingPackageError, OptionError, UnknownTaskError
from .dmc import DMC, mujoco_imports, prepare_rendering
from .from_dm import FromDM

OPTIONS = {
    'repeat': 1, 'episode_length': 2000, 'proprio': True, 'camera': 'ego'}
SHAPE_OPTIONS = ('proprio',)  # A run cannot resume with another value.
RANGES = ((r'env\.loconav\.(repeat|episode_length)', 'int', 1, None),)
ROBOTS = ('ant', 'ball')
CAMERAS = ('ego', 'top')
INSTALL = (
    'loconav tasks need dm_control and labmaze: '
    'pip install -r requirements-envs.txt')
PACKAGES = ('dm_control', 'labmaze', 'mujoco', 'dm_env')
CELL = 2.0  # Metres per maze cell.
WALL_HEIGHT = 1.5

# '#' wall, ' ' floor, 'P' spawn cells, 'G' the goal cell.
MAZES = {
    'maze_s': """
#######
#G    #
##### #
#P    #
#######
""",
    'maze_m': """
#########
#G  #  P#
### # # #
#   # # #
# ### # #
#P    # #
#######P#
#########
""",
    'maze_l': """
###########
#G    #  P#
# ### # ###
#   # #   #
### # ### #
#P  #   # #
# ##### # #
#     #  P#
##### ### #
#P        #
###########
""",
    'maze_xl': """
#############
#G  #     #P#
# # # ### # #
# #   #   # #
# ##### ### #
#P  #   #   #
### # ### ###
#   #   #  P#
# ##### ### #
#     #   # #
# ### ### # #
#P  #      P#
#############
""",
}

# Wall colours of the four quadrants (top left, top right, bottom left,
# bottom right), as the characters '1' to '4' of the maze's entity layer.
WALL_COLORS = ((0.8, 0.3, 0.3), (0.3, 0.7, 0.3), (0.3, 0.4, 0.8),
               (0.8, 0.7, 0.3))
FLOOR_COLORS = ((0.35, 0.35, 0.35), (0.25, 0.25, 0.25))


def entity_layer(maze):
  """Our ASCII map -> labmaze's: walls become their quadrant's character."""
  rows = maze.strip('\n').split('\n')
  if len({len(r) for r in rows}) != 1:
    raise ValueError('loconav maze rows differ in length')
  height, width = len(rows), len(rows[0])
  out = []
  for y, row in enumerate(rows):
    line = ''
    for x, char in enumerate(row):
      if char == '#':
        quadrant = 2 * (2 * y >= height) + (2 * x >= width)
        char = str(quadrant + 1)
      elif char not in ' PG':
        raise ValueError(f'loconav maze has unknown character {char!r}')
      line += char
    out.append(line)
  return '\n'.join(out) + '\n'


def make(name, *, seed=0, size=(64, 64), **kwargs):
  robot, _, maze = name.partition('_')
  if robot not in ROBOTS or maze not in MAZES:
    tasks = [f'loconav_{r}_{m}' for r in ROBOTS for m in MAZES]
    raise UnknownTaskError(
        f"Unknown task 'loconav_{name}': loconav has {', '.join(tasks)}")
  unknown = sorted(set(kwargs) - set(OPTIONS))
  if unknown:
    raise OptionError(
        f"Unknown option env.loconav.{unknown[0]}: loconav takes "
        f"{', '.join(OPTIONS)}")
  options = {**OPTIONS, **kwargs}
  for key in ('repeat', 'episode_length'):
    value = options[key]
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
      raise OptionError(
          f'env.loconav.{key} must be an integer >= 1, got {value!r}')
  if not isinstance(options['proprio'], bool):
    raise OptionError(
        f"env.loconav.proprio must be True or False, got "
        f"{options['proprio']!r}")
  if options['camera'] not in CAMERAS:
    raise OptionError(
        f"env.loconav.camera must be one of {', '.join(CAMERAS)}, got "
        f"{options['camera']!r}")
  if len(size) != 2 or min(size) < 1:
    raise OptionError(f'env.size must be (height, width), got {size!r}')
  env = build(robot, maze, seed, size, options['camera'])
  return LocoNav(env, size=size, **options)


def _import():
  prepare_rendering('loconav', INSTALL)
  try:
    import labmaze
  except ImportError as e:
    raise MissingPackageError(f'{INSTALL} ({e})') from None
  with mujoco_imports(PACKAGES, INSTALL):
    from dm_control import composer, mjcf
    from dm_control.locomotion.arenas import mazes
    from dm_control.locomotion.tasks import random_goal_maze
    from dm_control.locomotion.walkers import ant, jumping_ball
  return labmaze, composer, mjcf, mazes, random_goal_maze, ant, jumping_ball


def build(robot, maze, seed, size, camera):
  """The dm_control composer environment of a task."""
  (labmaze, composer, mjcf, mazes, random_goal_maze, ant,
   jumping_ball) = _import()

  class Checker(composer.Entity):
    """A checkered texture, for walls and floor."""

    def _build(self, name, rgb1, rgb2):
      self._mjcf_root = mjcf.RootElement(model=name)
      self._textures = [self._mjcf_root.asset.add(
          'texture', type='2d', name='texture', builtin='checker',
          rgb1=rgb1, rgb2=rgb2, width=64, height=64)]

    @property
    def mjcf_model(self):
      return self._mjcf_root

    @property
    def textures(self):
      return self._textures

  walls = {
      str(i + 1): Checker(f'wall{i + 1}', rgb, [0.8 * c for c in rgb])
      for i, rgb in enumerate(WALL_COLORS)}
  layout = labmaze.FixedMazeWithRandomGoals(entity_layer(MAZES[maze]))
  arena = mazes.MazeWithTargets(
      maze=layout, xy_scale=CELL, z_height=WALL_HEIGHT, wall_textures=walls,
      floor_textures=Checker('floor', *FLOOR_COLORS))
  if robot == 'ant':
    walker = ant.Ant()
  else:
    # Ears show the heading from above; they would block the egocentric view.
    walker = jumping_ball.RollingBallWithHead(add_ears=(camera == 'top'))
  task = random_goal_maze.RepeatSingleGoalMaze(
      walker=walker, maze_arena=arena, contact_termination=False,
      # Never runs out of repeats: the time limit ends the episode.
      max_repeats=np.iinfo(np.int32).max)
  height, width = (int(x) for x in size)
  if camera == 'ego':
    observable = walker.observables.egocentric_camera
  else:
    observable = arena.observables.top_camera
    observable.enabled = True
  observable.height, observable.width = height, width
  return composer.Environment(
      task=task, random_state=np.random.RandomState(seed),
      strip_singleton_obs_buffer_dim=True)


class LocoNav(DMC):
  """Adapts a composer maze task: one image observation (the camera), the
  other observations as proprio vectors; the episode length counted here.
  Stepping, observations, spaces and closing are the DMC adapter's."""

  def __init__(
      self, env, size=(64, 64), repeat=1, episode_length=2000, proprio=True,
      camera='ego'):
    FromDM.__init__(self, env, repeat, episode_length)
    self._size = tuple(int(x) for x in size)
    self._image = 'walker/egocentric_camera' if camera == 'ego' else (
        'top_camera')
    self._keys = {}  # dm_control key -> our key.
    self._shapes = {}
    for key, spec in env.observation_spec().items():
      if key == self._image or not proprio or len(spec.shape) >= 3:
        continue
      shape = (int(np.prod(spec.shape)),)
      if shape == (0,):  # The ant has no force or torque sensors.
        continue
      ours = key.split('/', 1)[-1]
      self._keys[key] = ours
      self._shapes[ours] = shape

  def _image_obs(self, timestep):
    # The camera is one of the task's observations, not a render.
    return np.asarray(timestep.observation[self._image], np.uint8)
