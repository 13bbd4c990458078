"""Save a PNG strip of replayed frames with their masked-loss masks.

  python scripts/mask_strip.py --logdir ~/logdir/pong [--k_steps 3]
      [--sequences 2] [--length 16] [--out strip.png]

Loads the replay buffer from the logdir's latest checkpoint, samples
sequences and draws, per sequence, a row of frames and below it the mask of
moving pixels (white: weighted alpha_strength in the image loss, any channel
moving). k_steps and cross_episodes default to the run's config.
"""

import argparse
import os
import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import elements  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from dreamerv3 import main as dmain  # noqa: E402
from dreamerv3 import masking  # noqa: E402
from embodied.core import Checkpoint  # noqa: E402


def load_replay(logdir):
  config = elements.Config.load(logdir / 'config.yaml')
  replay = dmain.make_replay(config, 'replay', directory=False)
  replay.directory = logdir / 'replay'  # Chunk files are read from here.
  checkpoint = Checkpoint(logdir / 'ckpt')
  checkpoint.register('replay', ReadOnly(replay))
  if not checkpoint.latest():
    raise SystemExit(f'Error: no checkpoint in {logdir / "ckpt"} yet.')
  checkpoint.load(keys=['replay'])
  return config, replay


class ReadOnly:
  """Loads the replay without Replay.load's write-back of chunk files, so
  looking at a run never changes its logdir."""

  def __init__(self, replay):
    self.replay = replay

  def save(self):
    raise NotImplementedError

  def load(self, data):
    with self.replay._lock:
      self.replay._load(data)


def strip(images, masks, gap=2):
  """images, masks [N, T, H, W, C] -> one uint8 RGB picture with rows
  frame, mask, frame, mask, ..."""
  N, T, H, W, C = images.shape
  if C == 1:
    images = np.repeat(images, 3, -1)
  masks = np.repeat(masks.any(-1, keepdims=True), 3, -1) * np.uint8(255)
  rows = [r for pair in zip(images, masks) for r in pair]
  out = np.full((len(rows) * (H + gap), T * (W + gap), 3), 128, np.uint8)
  for i, row in enumerate(rows):
    for t in range(T):
      y, x = i * (H + gap), t * (W + gap)
      out[y:y + H, x:x + W] = row[t]
  return out


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--logdir', required=True)
  parser.add_argument('--key', default='', help='image key (default: first)')
  parser.add_argument('--k_steps', type=int, default=None)
  parser.add_argument('--cross_episodes', type=int, default=None)
  parser.add_argument('--sequences', type=int, default=2)
  parser.add_argument('--length', type=int, default=16)
  parser.add_argument('--scale', type=int, default=2)
  parser.add_argument('--seed', type=int, default=0)
  parser.add_argument('--out', default='')
  args = parser.parse_args(argv)
  logdir = elements.Path(os.path.expanduser(args.logdir))
  config, replay = load_replay(logdir)
  replay.sampler._rng = np.random.default_rng(args.seed)
  batch = replay.sample(args.sequences)
  keys = [k for k, v in batch.items() if v.ndim == 5 and v.dtype == np.uint8]
  if not keys:
    raise SystemExit('Error: the replay holds no image observations.')
  key = args.key or keys[0]
  if key not in keys:
    raise SystemExit(f"Error: no image key '{key}'; have {', '.join(keys)}")
  k = config.dynamics.k_steps if args.k_steps is None else args.k_steps
  cross = config.dynamics.cross_episodes if args.cross_episodes is None \
      else bool(args.cross_episodes)
  # The mask as the train step sees it: over the trained steps only.
  start = config.replay_context
  images = batch[key][:, start:]
  is_first = batch['is_first'][:, start:]
  masks = np.asarray(masking.moving_mask(images, is_first, k, cross))
  T = min(args.length, images.shape[1])
  picture = strip(images[:, :T], masks[:, :T])
  picture = picture.repeat(args.scale, 0).repeat(args.scale, 1)
  out = elements.Path(args.out or logdir / f'mask_strip_{key}.png')
  Image.fromarray(picture).save(str(out))
  print(f'Moving pixels: {masks.mean():.2%} (k_steps {k}, cross_episodes '
        f'{cross}); saved {out}')
  return out


if __name__ == '__main__':
  main()
