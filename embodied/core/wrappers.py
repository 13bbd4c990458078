"""Env wrappers that adapt spaces and episode boundaries."""

import elements
import numpy as np

from .base import Wrapper


class NormalizeAction(Wrapper):
  """Exposes [-1, 1] for the bounded dims of a continuous action."""

  def __init__(self, env, key='action'):
    super().__init__(env)
    self._key = key
    space = env.act_space[key]
    if not np.issubdtype(space.dtype, np.floating):
      raise ValueError(f"NormalizeAction needs a float action, '{key}' is {space}")
    # Unbounded dims have no scale to normalize by, so they pass through.
    self._mask = np.isfinite(space.low) & np.isfinite(space.high)
    self._low = np.where(self._mask, space.low, -1).astype(np.float64)
    self._high = np.where(self._mask, space.high, 1).astype(np.float64)
    self._dtype = space.dtype
    self._space = elements.Space(
        np.float32, space.shape,
        np.where(self._mask, -1, space.low),
        np.where(self._mask, 1, space.high))

  @property
  def act_space(self):
    return {**self.env.act_space, self._key: self._space}

  def step(self, action):
    if action['reset']:
      return self.env.step(action)  # The action is ignored and may be absent.
    value = np.asarray(action[self._key], np.float64)
    scaled = (value + 1) / 2 * (self._high - self._low) + self._low
    scaled = np.where(self._mask, scaled, value).astype(self._dtype)
    return self.env.step({**action, self._key: scaled})


class OneHotAction(Wrapper):
  """Exposes a float32 one-hot vector for a scalar discrete action."""

  def __init__(self, env, key='action'):
    super().__init__(env)
    self._key = key
    space = env.act_space[key]
    if not space.discrete or space.shape != () or space.dtype == bool:
      raise ValueError(f"OneHotAction needs a scalar int action, '{key}' is {space}")
    self._offset = int(space.low)
    self._count = int(space.high) - self._offset
    self._dtype = space.dtype
    self._space = elements.Space(np.float32, (self._count,), 0, 1)

  @property
  def act_space(self):
    return {**self.env.act_space, self._key: self._space}

  def step(self, action):
    if action['reset']:
      # The inner env ignores the action on reset; any placeholder will do.
      index = self._offset
    else:
      value = np.asarray(action[self._key])
      if value.shape != (self._count,):
        raise ValueError(
            f"OneHotAction '{self._key}' expects shape ({self._count},), "
            f'got {value.shape}')
      index = int(np.argmax(value))
      expected = np.zeros(self._count, value.dtype)
      expected[index] = 1
      if not np.array_equal(value, expected):
        raise ValueError(
            f"OneHotAction '{self._key}' expects a one-hot vector, got {value}")
      index += self._offset
    return self.env.step({**action, self._key: self._dtype.type(index)})


class TimeLimit(Wrapper):
  """Truncates episodes after `duration` steps (is_last, not is_terminal)."""

  def __init__(self, env, duration):
    super().__init__(env)
    self._duration = duration or 0
    self._step = None  # None until the first reset.

  def step(self, action):
    if action['reset'] or self._step is None:
      self._step = 0
      # Force the inner env to reset too, also after our own truncation.
      return self.env.step({**action, 'reset': True})
    self._step += 1
    obs = self.env.step(action)
    if self._duration and self._step >= self._duration:
      obs['is_last'] = np.bool_(True)
    if obs['is_last']:
      self._step = None
    return obs


class ResizeImage(Wrapper):
  """Resizes uint8 HxWxC image observations to `size` (height, width)."""

  def __init__(self, env, size=(64, 64), keys=None, method='bilinear'):
    super().__init__(env)
    from PIL import Image  # Lazy so that core imports without pillow.
    self._image = Image
    self._size = tuple(size)
    # 'area' averages source pixels, like OpenCV's INTER_AREA.
    self._resample = {
        'nearest': Image.Resampling.NEAREST,
        'bilinear': Image.Resampling.BILINEAR,
        'area': Image.Resampling.BOX,
    }[method]
    spaces = env.obs_space
    if keys is None:
      keys = [k for k, v in spaces.items() if _is_image(v)]
    for key in keys:
      if not _is_image(spaces[key]):
        raise ValueError(
            f"ResizeImage needs a uint8 HxWxC image, '{key}' is {spaces[key]}")
    # Keys already at the target size are left alone.
    self._keys = [k for k in keys if spaces[k].shape[:2] != self._size]

  @property
  def obs_space(self):
    spaces = dict(self.env.obs_space)
    for key in self._keys:
      channels = spaces[key].shape[2]
      spaces[key] = elements.Space(np.uint8, (*self._size, channels))
    return spaces

  def step(self, action):
    obs = self.env.step(action)
    for key in self._keys:
      obs[key] = self._resize(obs[key])
    return obs

  def _resize(self, image):
    height, width = self._size
    if image.shape[2] in (3, 4):
      out = self._image.fromarray(image).resize((width, height), self._resample)
      return np.asarray(out)
    # PIL has no mode for other channel counts, so resize channels one by one.
    chans = [
        np.asarray(self._image.fromarray(image[:, :, i]).resize(
            (width, height), self._resample))
        for i in range(image.shape[2])]
    return np.stack(chans, -1)


def _is_image(space):
  return space.dtype == np.uint8 and len(space.shape) == 3


class ClipAction(Wrapper):
  """Clips a continuous action into its space's bounds before the env sees
  it. The agent samples actions from an unclipped Normal (so that their
  log-probabilities are exact) and replay stores them unclipped."""

  def __init__(self, env, key='action'):
    super().__init__(env)
    self._key = key
    space = env.act_space[key]
    self._low, self._high = space.low, space.high

  def step(self, action):
    if action['reset']:
      return self.env.step(action)
    value = np.clip(action[self._key], self._low, self._high)
    return self.env.step({**action, self._key: value})


class CheckSpaces(Wrapper):
  """Validates every action and observation against the declared spaces."""

  def step(self, action):
    spaces = self.env.act_space
    if 'reset' not in action:
      raise ValueError(f"Action has no 'reset' key: {sorted(action)}")
    _check_value('Action', 'reset', action['reset'], spaces['reset'])
    if action['reset']:
      # On reset the env ignores the other keys, so they may be absent or junk.
      _check_keys('Action', action, spaces, allow_missing=True)
    else:
      _check_keys('Action', action, spaces)
      for key, value in action.items():
        _check_value('Action', key, value, spaces[key])
    obs = self.env.step(action)
    spaces = self.env.obs_space
    _check_keys('Obs', obs, spaces)
    for key, value in obs.items():
      _check_value('Obs', key, value, spaces[key])
    return obs


def _check_keys(kind, values, spaces, allow_missing=False):
  missing = [] if allow_missing else sorted(set(spaces) - set(values))
  extra = sorted(set(values) - set(spaces))
  if missing or extra:
    raise ValueError(
        f'{kind} keys do not match the space: missing {missing}, '
        f'unexpected {extra}')


def _check_value(kind, key, value, space):
  if value in space:
    return
  value = np.asarray(value)
  detail = f'shape {value.shape} dtype {value.dtype}'
  if value.size and np.issubdtype(value.dtype, np.number):
    detail += f' range [{value.min()}, {value.max()}]'
  raise ValueError(f"{kind} '{key}' with {detail} is not in {space}")
