"""Atari 2600 games on the Arcade Learning Environment: atari_<game>.

Games are ALE ROM ids in snake_case (atari_pong, atari_ms_pacman,
atari_battle_zone); the ROMs ship inside ale-py. The env drives
ale_py.ALEInterface directly, with the standard protocol:

- repeat: each step repeats the action for this many frames and sums the
  rewards; the image is the pixel-wise max over the last two of those frames
  (sprites that flicker between frames stay visible).
- noops: after a reset, a random number of NOOP frames, uniform in 0..noops.
- sticky: ALE's repeat_action_probability; on every frame the emulator keeps
  the previous action with this probability (Machado et al. 2018).
- gray: grayscale image (H, W, 1), else RGB (H, W, 3), resized to the
  `size` argument (config env.size) with `resize`. As in the reference
  DreamerV3, the RGB frame is resized first and then weighted 0.299 R +
  0.587 G + 0.114 B (truncated to uint8); ALE's own grayscale palette
  gives slightly different values.
- actions: 'all' for the 18 legal actions, 'needed' for the game's minimal set.
- lives: 'unused' ignores life loss; 'discount' marks a life loss as
  is_terminal (no value bootstrap) while the episode goes on; 'reset' ends the
  episode at a life loss (is_last and is_terminal) and the next episode
  continues the same game, so episode scores are per life in that mode.
- clip_reward: report the sign of the summed reward.
- max_frames: episode cap in emulator frames after the no-op start (as the
  reference counts them); reaching it sets is_last but not is_terminal: a
  time limit is not a game over, so the value bootstraps through it (the
  reference marks it terminal, which teaches the critic that the game
  ends where only the clock ran out).

One agent step is `repeat` frames: 1e5 agent steps are 400k frames.
The atari100k suite is this env with other defaults (see atari100k.py).
"""

import difflib

import elements
import numpy as np

from . import OptionError, UnknownTaskError
from ..core import base

LIVES = ('unused', 'discount', 'reset')
ACTIONS = ('all', 'needed')
RESIZE = ('bilinear', 'area', 'nearest')
# Luma weights of the RGB -> gray conversion (ITU-R BT.601).
GRAY_WEIGHTS = np.array([0.299, 0.587, 0.114])
# Options that change observation or action shapes (a run cannot resume
# with other values).
SHAPE_OPTIONS = ('gray', 'actions')


def ranges(suite):
  """Config checks (dreamerv3/validate.py) of env.<suite>.*."""
  return ((rf'env\.{suite}\.repeat', 'int', 1, None),
          (rf'env\.{suite}\.(noops|max_frames)', 'int', 0, None),
          (rf'env\.{suite}\.sticky', 'number', 0, 1))


RANGES = ranges('atari')

# Defaults of the Atari 200M-frame protocol; atari100k.py overrides some.
PROTOCOL = dict(
    repeat=4, noops=30, sticky=0.25, gray=True, actions='all',
    lives='unused', clip_reward=False, max_frames=108000, resize='bilinear')


def games():
  from ale_py import roms
  return tuple(roms.get_all_rom_ids())


def make(name, *, seed=0, size=(96, 96), suite='atari', **kwargs):
  """Builds the env for game `name`; `suite` only names the task in errors."""
  options = {**PROTOCOL, **kwargs}
  unknown = sorted(set(options) - set(PROTOCOL))
  if unknown:
    raise OptionError(
        f"Unknown option env.{suite}.{unknown[0]}: {suite} takes "
        f"{', '.join(PROTOCOL)}")
  valid = games()
  if name not in valid:
    close = difflib.get_close_matches(name, valid, n=3)
    hint = f"did you mean {', '.join(close)}? " if close else ''
    raise UnknownTaskError(
        f"Unknown task '{suite}_{name}': no ALE game '{name}'; {hint}"
        'games are ALE ROM ids in snake_case, e.g. pong, breakout, '
        f'ms_pacman, battle_zone ({len(valid)} in '
        'ale_py.roms.get_all_rom_ids())')
  return Atari(name, size=size, seed=seed, suite=suite, **options)


class Atari(base.Env):

  def __init__(
      self, game, size=(96, 96), repeat=4, noops=30, sticky=0.25, gray=True,
      actions='all', lives='unused', clip_reward=False, max_frames=108000,
      resize='bilinear', seed=0, suite='atari'):
    import ale_py
    from ale_py import roms
    _check(suite, 'actions', actions, ACTIONS)
    _check(suite, 'lives', lives, LIVES)
    _check(suite, 'resize', resize, RESIZE)
    for key, value, low in (
        ('repeat', repeat, 1), ('noops', noops, 0),
        ('max_frames', max_frames, 0)):
      if int(value) != value or value < low:
        raise OptionError(
            f'env.{suite}.{key} must be an integer >= {low}, got {value!r}')
    if not 0 <= sticky <= 1:
      raise OptionError(
          f'env.{suite}.sticky must be a probability in [0, 1], got {sticky!r}')
    if len(size) != 2 or min(size) < 1:
      raise OptionError(f'env.size must be (height, width), got {size!r}')
    self._game = game
    self._size = tuple(int(x) for x in size)
    self._repeat = int(repeat)
    self._noops = int(noops)
    self._gray = bool(gray)
    self._lives = lives
    self._clip = bool(clip_reward)
    self._max_frames = int(max_frames)
    self._frames = 0  # Emulator frames since the no-op start.
    self._rng = np.random.default_rng(seed)

    self._ale = ale_py.ALEInterface()
    self._ale.setLoggerMode(ale_py.LoggerMode.Error)
    # ALE rejects numpy scalars here: plain int and float only.
    self._ale.setInt('random_seed', int(self._rng.integers(2 ** 31)))
    self._ale.setFloat('repeat_action_probability', float(sticky))
    self._ale.setInt('max_num_frames_per_episode', 0)  # We cap ourselves.
    self._ale.loadROM(str(roms.get_rom_path(game)))
    self._actions = list(
        self._ale.getLegalActionSet() if actions == 'all'
        else self._ale.getMinimalActionSet())
    self._noop = ale_py.Action.NOOP

    height, width = self._ale.getScreenDims()
    self._buffers = [np.zeros((height, width, 3), np.uint8) for _ in range(2)]
    self._resize = None
    if self._size != (height, width):
      from PIL import Image
      method = {
          'bilinear': Image.Resampling.BILINEAR,
          # PIL's box filter averages the covered source pixels (area).
          'area': Image.Resampling.BOX,
          'nearest': Image.Resampling.NEAREST}[resize]
      self._resize = lambda x: np.asarray(
          Image.fromarray(x).resize(self._size[::-1], method))
    self._done = True
    self._new_game = True  # Whether the next reset must restart the game.
    # Built once: an elements.Space takes ~0.5 ms to create.
    self._obs_space = {
        'image': elements.Space(
            np.uint8, (*self._size, 1 if self._gray else 3)),
        **base.step_spaces(),
    }
    self._act_space = base.discrete_act_space(len(self._actions))

  @property
  def ale(self):
    return self._ale

  @property
  def game(self):
    return self._game

  @property
  def obs_space(self):
    return dict(self._obs_space)

  @property
  def act_space(self):
    return dict(self._act_space)

  def step(self, action):
    if action['reset'] or self._done:
      return self._reset()
    ale = self._ale
    act = self._actions[int(action['action'])]
    lives = ale.lives()
    reward = 0.0
    grabbed = 0
    over = capped = False
    for i in range(self._repeat):
      reward += ale.act(act)
      self._frames += 1
      over = ale.game_over(with_truncation=False)
      capped = bool(self._max_frames) and self._frames >= self._max_frames
      # Keep the last two frames of the repeat for the max-pool; an episode
      # that ends early keeps only its final frame.
      if over or capped or i >= self._repeat - 2:
        self._grab(self._buffers[grabbed % 2])
        grabbed += 1
      if over or capped:
        break
    lost = ale.lives() < lives
    terminal = over or (lost and self._lives != 'unused')
    last = over or capped or (lost and self._lives == 'reset')
    self._done = last
    # A life-loss episode end continues the game on the next reset.
    self._new_game = over or capped
    if self._clip:
      reward = float(np.sign(reward))
    image = self._buffers[(grabbed - 1) % 2]
    if grabbed >= 2:
      image = np.maximum(self._buffers[0], self._buffers[1])
    return self._obs(image, reward, False, last, terminal)

  def _reset(self):
    ale = self._ale
    # Only an episode that ended at a life loss continues its game; a reset
    # asked for mid-episode (e.g. by a time limit) restarts it.
    if self._new_game or not self._done:
      ale.reset_game()
      for _ in range(int(self._rng.integers(self._noops + 1))):
        ale.act(self._noop)
        if ale.game_over(with_truncation=False):
          ale.reset_game()
      self._frames = 0  # The cap counts frames of one game.
    self._done = False
    self._new_game = False
    self._grab(self._buffers[0])
    return self._obs(self._buffers[0], 0.0, True, False, False)

  def _grab(self, buffer):
    self._ale.getScreenRGB(buffer)

  def _obs(self, image, reward, is_first, is_last, is_terminal):
    if self._resize:
      image = self._resize(image)
    else:
      image = image.copy()  # The buffers are overwritten on the next step.
    if self._gray:
      image = (image * GRAY_WEIGHTS).sum(-1).astype(np.uint8)[:, :, None]
    return {
        'image': image,
        'reward': np.float32(reward),
        'is_first': np.bool_(is_first),
        'is_last': np.bool_(is_last),
        'is_terminal': np.bool_(is_terminal),
    }


def _check(suite, key, value, choices):
  if value not in choices:
    raise OptionError(
        f"env.{suite}.{key} must be one of {', '.join(choices)}, got {value!r}")
