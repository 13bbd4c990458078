"""Logger outputs of a run (elements.Logger): the terminal summary, JSON
lines, TensorBoard and video files."""

import json
import re
import time

import elements
import numpy as np

from embodied.core import video


class Summary:
  """elements.Logger output that prints a short, readable block with the
  numbers people watch, instead of every metric."""

  KEYS = (
      ('episode/score', 'score'), ('episode/length', 'length'),
      ('fps/env', 'env_fps'), ('fps/train', 'train_ups'),
      ('fps/replayed', 'replay_fps'), ('train/loss/rec', 'rec'),
      ('train/loss/rew', 'rew'), ('train/loss/dyn', 'dyn'),
      ('train/loss/policy', 'pol'), ('train/loss/value', 'val'),
      ('train/ac/entropy', 'ent'), ('replay/size', 'replay'))

  def __init__(self, name='train'):
    self.name = name

  def __call__(self, summaries):
    step = max(s for s, _, _ in summaries)
    values = {}
    for _, key, value in summaries:
      if isinstance(value, np.ndarray) and value.ndim == 0:
        values[key] = float(value)
    parts = [f'{label} {_fmt(values[key])}' for key, label in self.KEYS
             if key in values]
    stamp = time.strftime('%H:%M:%S')
    print(f'[{stamp} {self.name} step {step:,}] ' + ' | '.join(parts),
          flush=True)


def _fmt(value):
  if value != value:
    return 'nan'
  if abs(value) >= 1e4 or (0 < abs(value) < 1e-2):
    return f'{value:.2e}'
  return f'{value:.3g}' if abs(value) < 100 else f'{value:.1f}'


class JSONL:
  """elements.Logger output appending the scalar metrics matching a pattern
  to a JSON-lines file, one line per step (quiet, unlike elements' own)."""

  def __init__(self, logdir, filename, pattern=r'.*'):
    self.path = elements.Path(logdir) / filename
    self.pattern = re.compile(pattern)

  def __call__(self, summaries):
    # One line per step; a key seen twice at one step (two episodes ending
    # on the same env step) starts a new line so no value is lost.
    lines, current, current_step = [], {}, None
    for step, name, value in summaries:
      if not (self.pattern.search(name) and isinstance(value, np.ndarray) and
              value.ndim == 0):
        continue
      if current and (step != current_step or name in current):
        lines.append({'step': current_step, **current})
        current = {}
      current_step = step
      current[name] = float(value)
    if current:
      lines.append({'step': current_step, **current})
    if lines:
      with self.path.open('a') as f:
        f.write(''.join(json.dumps(line) + '\n' for line in lines))


class TensorBoard:
  """elements.Logger output writing scalars (and images) with tensorboardX,
  so TensorBoard logs need no TensorFlow install."""

  def __init__(self, logdir, fps=15):
    from tensorboardX import SummaryWriter
    self.writer = SummaryWriter(str(logdir), flush_secs=30)
    self.fps = fps

  def __call__(self, summaries):
    for step, name, value in summaries:
      if isinstance(value, np.ndarray) and value.ndim == 0:
        self.writer.add_scalar(name, float(value), step)
      elif isinstance(value, np.ndarray) and value.ndim == 3:
        self.writer.add_image(name, value, step, dataformats='HWC')
      elif isinstance(value, np.ndarray) and value.ndim == 4:
        self._video(name, value, step)
    self.writer.flush()

  def wait(self):
    """Puts everything written so far on disk (elements.Logger.close calls
    it): tensorboardX writes from a queue that flush() does not drain. A
    later write opens a new event file."""
    self.writer.close()

  def _video(self, name, value, step):
    # An animated GIF in an image summary (TensorBoard's Images tab plays
    # it): tensorboardX's add_video would need moviepy for the same GIF.
    from tensorboardX.proto.summary_pb2 import Summary as Proto
    value = video.render(value, min_size=1)
    T, H, W, _ = value.shape
    image = Proto.Image(
        height=H, width=W, colorspace=3,
        encoded_image_string=video.encode_gif(value, self.fps))
    summary = Proto(value=[Proto.Value(tag=name, image=image)])
    self.writer._get_file_writer().add_summary(summary, step)


class VideoFiles:
  """elements.Logger output writing every video ([T, H, W, C]) to
  DIR/NAME-STEP.mp4 (NAME with '/' as '-'), for any video player."""

  def __init__(self, directory, fps=15, ext='mp4'):
    self.directory = elements.Path(directory)
    self.fps = fps
    self.ext = ext

  def __call__(self, summaries):
    for step, name, value in summaries:
      if not (isinstance(value, np.ndarray) and value.ndim == 4):
        continue
      self.directory.mkdir()
      path = self.directory / f"{name.replace('/', '-')}-{int(step):010d}.{self.ext}"
      tmp = path.parent / (path.name + '.tmp.' + self.ext)
      video.write(tmp, value, self.fps)
      tmp.move(path)
