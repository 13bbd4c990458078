"""Videos of observations: turning image frames into viewable RGB, writing
and reading video files, and recording one env's episode from the driver.

A video is a uint8 array [T, H, W, C]. render() makes any such array
viewable: 1 channel is grayscale (repeated to RGB), 3 channels are RGB, any
other channel count (MinAtar's binary object channels) is drawn with a fixed
colour per channel; small frames are scaled up with nearest neighbour and
odd sizes padded to even ones (H.264 needs even sizes).
"""

import io

import numpy as np

# One colour per channel for multi-channel images (tab10-like, distinct on
# black); channels beyond the list reuse it cyclically.
PALETTE = np.array([
    (31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40),
    (148, 103, 189), (140, 86, 75), (227, 119, 194), (188, 189, 34),
    (23, 190, 207), (255, 255, 255)], np.float32)


def image_keys(space):
  """Keys of image observations ([H, W, C]) in an obs space or obs dict."""
  keys = []
  for key, value in space.items():
    if key.startswith('log/'):
      continue
    if len(getattr(value, 'shape', ())) == 3:
      keys.append(key)
  return sorted(keys)


def to_rgb(frames):
  """[..., C] uint8 (or floats in [0, 255]) -> [..., 3] uint8: grayscale
  repeated, RGB kept, other channel counts blended with PALETTE, each
  channel weighted by its intensity (binary channels give flat colours)."""
  frames = np.asarray(frames)
  channels = frames.shape[-1]
  if channels == 3:
    return np.clip(frames, 0, 255).astype(np.uint8)
  if channels == 1:
    return np.repeat(np.clip(frames, 0, 255).astype(np.uint8), 3, -1)
  colours = PALETTE[np.arange(channels) % len(PALETTE)]
  weights = frames.astype(np.float32) / 255.0
  rgb = np.einsum('...c,cd->...d', weights, colours)
  return np.clip(rgb, 0, 255).astype(np.uint8)


def render(video, min_size=64, cell=None):
  """[T, H, W, C] -> viewable [T, H', W', 3] uint8. cell=(h, w) is the size
  of one image inside a grid of images (e.g. an open-loop report): the scale
  factor makes that cell at least min_size pixels on its shorter side."""
  video = np.asarray(video)
  if video.ndim != 4:
    raise ValueError(f'A video needs shape [T, H, W, C], got {video.shape}')
  video = to_rgb(video)
  h, w = cell or video.shape[1:3]
  scale = max(1, -(-min_size // max(1, min(h, w))))
  if scale > 1:
    video = video.repeat(scale, 1).repeat(scale, 2)
  pad_h, pad_w = video.shape[1] % 2, video.shape[2] % 2
  if pad_h or pad_w:
    video = np.pad(video, ((0, 0), (0, pad_h), (0, pad_w), (0, 0)))
  return video


def openloop_grid(truth, pred, xp=np):
  """Truth and prediction [B, T, H, W, C] (uint8, or floats in [0, 255]) ->
  [T, 3H, B*W, C] uint8: truth, prediction and their absolute difference
  stacked vertically, one column per sequence. Works on NumPy and, with
  xp=jax.numpy, inside jitted code."""
  truth = truth.astype(xp.float32)
  # Rounded first, so the difference row is exactly that of the shown rows.
  pred = xp.round(xp.clip(pred.astype(xp.float32), 0, 255))
  diff = xp.abs(truth - pred)
  video = xp.concatenate([truth, pred, diff], 2)  # [B, T, 3H, W, C]
  B, T, H3, W, C = video.shape
  video = video.transpose(1, 2, 0, 3, 4).reshape(T, H3, B * W, C)
  return xp.round(video).astype(xp.uint8)


def write(path, video, fps=15):
  """Writes [T, H, W, C] to path: MP4 (H.264 via PyAV) for .mp4, else GIF
  (pillow). The frames are rendered first (see render)."""
  path = str(path)
  video = render(video, min_size=1)
  if path.endswith('.mp4'):
    import imageio.v3 as iio
    iio.imwrite(path, video, plugin='pyav', codec='libx264', fps=float(fps))
  else:
    with open(path, 'wb') as f:
      f.write(encode_gif(video, fps))


def read(path):
  """Decodes a video file written by write() into [T, H, W, 3] uint8."""
  import imageio.v3 as iio
  path = str(path)
  if path.endswith('.mp4'):
    return np.asarray(iio.imread(path, plugin='pyav'))
  return np.asarray(iio.imread(path, index=None, mode='RGB'))


def encode_gif(video, fps=15):
  """[T, H, W, 3] uint8 -> bytes of a looping GIF."""
  from PIL import Image
  images = [Image.fromarray(frame) for frame in to_rgb(video)]
  buffer = io.BytesIO()
  images[0].save(
      buffer, format='GIF', save_all=True, append_images=images[1:],
      duration=max(1, int(round(1000 / fps))), loop=0)
  return buffer.getvalue()


class EpisodeRecorder:
  """Driver callback collecting the image observations of one env worker
  for one whole episode, once armed. arm() starts recording at the
  worker's next episode start; done() returns {key: [T, H, W, C]} once that
  episode has ended (or max_frames were collected), else None. Tasks without
  image observations never record anything."""

  def __init__(self, worker=0, max_frames=1000):
    self.worker = worker
    self.max_frames = max_frames
    self.armed = False
    self.frames = None
    self.result = None

  def arm(self):
    if self.frames is None and self.result is None:
      self.armed = True

  def __call__(self, tran, worker):
    if worker != self.worker:
      return
    # A new episode while recording means the recorded one was cut off
    # (the driver was reset): start over with the new one.
    if tran['is_first'] and (self.armed or self.frames is not None):
      keys = image_keys(tran)
      self.armed = False
      self.frames = {k: [] for k in keys} if keys else None
    if self.frames is None:
      return
    for key, frames in self.frames.items():
      frames.append(np.asarray(tran[key]))
    full = len(next(iter(self.frames.values()))) >= self.max_frames
    if tran['is_last'] or full:
      self.result = {k: np.stack(v) for k, v in self.frames.items()}
      self.frames = None

  def done(self):
    result, self.result = self.result, None
    return result
