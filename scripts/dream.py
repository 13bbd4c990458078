"""Watch the world model dream: takes a sequence from a run's replay (as
saved with its latest checkpoint), lets the model observe the first
--context frames and then roll on for --horizon frames on its own.

  python scripts/dream.py --logdir ~/logdir/run --context 8 --horizon 32
  python scripts/dream.py --logdir ~/logdir/run --actions policy

--actions replay (default) feeds the actions that were taken and shows the
real frames left and the model's frames right; --actions policy lets the
agent act inside its own model and shows only the dream. A bar above each
frame is green while the model observes and red while it dreams. Nothing is
written into the run's logdir (default output: ./dream.mp4, or --out). A
logdir without a checkpoint exits with status 2.

  python scripts/dream.py --logdir ~/logdir/run --masks --k_steps 3

--masks draws, instead of a dream, the masked pixel loss's masks
(dreamerv3/masking.py) into OUT/mask_strip_<key>.png: per replay sequence
sampled as the train step samples it, a row of frames and below it the mask
of moving pixels (white: weighted masking.alpha_strength in the image loss,
any channel moving). --k_steps and --cross_episodes default to the run's
config; the agent is not loaded.
"""

import argparse
import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402


def parse(argv):
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--logdir', required=True)
  parser.add_argument('--context', type=int, default=8,
                      help='frames the model observes (at least 1)')
  parser.add_argument('--horizon', type=int, default=32,
                      help='frames the model dreams after them')
  parser.add_argument('--actions', default='replay',
                      choices=('replay', 'policy'))
  parser.add_argument('--video', default='',
                      help='video file (.mp4 or .gif); default OUT/dream.mp4')
  parser.add_argument('--out', default='.', help='folder for default outputs')
  parser.add_argument('--seed', type=int, default=0,
                      help='picks the replay sequence and the dream samples')
  masks = parser.add_argument_group('--masks')
  masks.add_argument('--masks', action='store_true',
                     help='save frames and their loss masks as a PNG instead')
  masks.add_argument('--key', default='', help='image key (default: first)')
  masks.add_argument('--k_steps', type=int, default=None)
  masks.add_argument('--cross_episodes', type=int, default=None,
                     choices=(0, 1))
  masks.add_argument('--sequences', type=int, default=2)
  masks.add_argument('--length', type=int, default=16,
                     help='frames per sequence drawn')
  masks.add_argument('--scale', type=int, default=2,
                     help='pixels per frame pixel')
  return parser.parse_args(argv)


def missing_checkpoint(logdir):
  """Why the logdir cannot be looked at, or None."""
  import elements
  from embodied.core import Checkpoint
  if not (logdir / 'config.yaml').exists():
    return f'{logdir} is not a run logdir (no config.yaml)'
  if Checkpoint(elements.Path(logdir) / 'ckpt').latest() is None:
    return (f'{logdir} holds no complete checkpoint (ckpt/): let the run '
            'save one first (run.save_every) or pass another logdir')
  return None


def main(argv=None):
  args = parse(sys.argv[1:] if argv is None else argv)
  if args.context < 1 or args.horizon < 1:
    print('Error: --context and --horizon must be at least 1',
          file=sys.stderr)
    return 2
  # Checked before loading anything, which takes a while.
  logdir = pathlib.Path(args.logdir).expanduser().resolve()
  error = missing_checkpoint(logdir)
  if error:
    print(f'Error: {error}', file=sys.stderr)
    return 2
  out = pathlib.Path(args.out).expanduser().resolve()
  path = pathlib.Path(args.video).expanduser().resolve() if args.video \
      else out / 'dream.mp4'
  target = out if args.masks else path
  if target == logdir or logdir in target.parents:
    print(f'Error: {target} is inside the run logdir {logdir}; the tools '
          'never write there', file=sys.stderr)
    return 2
  if args.masks:
    return mask_strip(args, logdir, out)
  from dreamerv3 import tools
  from embodied.core import video
  try:
    run = tools.Run(args.logdir, replay=True)
  except tools.NoCheckpoint as e:
    print(f'Error: {e}', file=sys.stderr)
    return 2
  if not run.images:
    print(f'Error: the task {run.config.task} has no image observations to '
          'dream', file=sys.stderr)
    return 2

  policy = args.actions == 'policy'
  K = run.config.replay_context
  horizon = args.horizon
  need = K + args.context + (0 if policy else horizon)
  rng = np.random.default_rng(args.seed)
  seq = next(run.sequences(need, rng), None)
  if seq is None and not policy:
    # Chunks are shorter than asked for: dream as far as replay reaches.
    longest = _longest(run)
    horizon = longest - K - args.context
    if horizon >= 1:
      print(f'Replay holds at most {longest} consecutive steps: horizon '
            f'cut to {horizon}.')
      need = K + args.context + horizon
      seq = next(run.sequences(need, rng), None)
  if seq is None:
    print(f'Error: the replay of {run.logdir} has no sequence of {need} '
          'steps (replay_context + context [+ horizon])', file=sys.stderr)
    return 2

  agent = run.agent
  keys = set(agent.obs_space) | set(agent.act_space) | set(agent.ext_space)
  data = tools.batch({k: v for k, v in seq.items() if k in keys})
  out = run.dream_fn(args.context, horizon, policy)(data, args.seed)
  steps = args.context + horizon
  observed = np.arange(steps) < args.context
  panels = []
  for key in run.images:
    dream = np.clip(np.round(out[key][0]), 0, 255).astype(np.uint8)
    if policy:
      clip = video.render(dream)
    else:
      real = data[key][0, K:K + steps]
      clip = np.concatenate([video.render(real), video.render(dream)], 2)
    panels.append(clip)
  height = max(p.shape[1] for p in panels)
  panels = [np.pad(p, ((0, 0), (0, height - p.shape[1]), (0, 0), (0, 0)))
            for p in panels]
  frames = np.concatenate(panels, 2)
  bar = np.zeros((steps, 4, frames.shape[2], 3), np.uint8)
  bar[observed] = (0, 200, 0)
  bar[~observed] = (220, 0, 0)
  frames = np.concatenate([bar, frames], 1)
  path.parent.mkdir(parents=True, exist_ok=True)
  video.write(path, frames, run.config.logger.fps)
  reward = out['reward'][0, args.context:].sum()
  line = f'Dreamed {horizon} steps after {args.context} observed ' \
         f'({args.actions} actions): predicted reward {reward:.2f}'
  if not policy:
    real = data['reward'][0, K + args.context:K + steps].sum()
    line += f', real reward {real:.2f}'
  print(line)
  print(f'Video: {path}')
  return 0


def mask_strip(args, logdir, out):
  """Saves OUT/mask_strip_<key>.png; returns the exit status."""
  from PIL import Image
  from dreamerv3 import masking
  config, replay = load_replay(logdir)
  replay.sampler._rng = np.random.default_rng(args.seed)
  batch = replay.sample(args.sequences)
  keys = [k for k, v in batch.items() if v.ndim == 5 and v.dtype == np.uint8]
  key = args.key or (keys[0] if keys else '')
  if key not in keys:
    print(f"Error: no image observation '{key}' in the replay (have "
          f"{', '.join(keys) or 'none'})", file=sys.stderr)
    return 2
  k = config.masking.k_steps if args.k_steps is None else args.k_steps
  cross = config.masking.cross_episodes if args.cross_episodes is None \
      else bool(args.cross_episodes)
  # The mask as the train step sees it: over the trained steps only.
  start = config.replay_context
  images = batch[key][:, start:]
  is_first = batch['is_first'][:, start:]
  masks = np.asarray(masking.moving_mask(images, is_first, k, cross))
  T = min(args.length, images.shape[1])
  picture = strip(images[:, :T], masks[:, :T])
  picture = picture.repeat(args.scale, 0).repeat(args.scale, 1)
  path = out / f'mask_strip_{key}.png'
  path.parent.mkdir(parents=True, exist_ok=True)
  Image.fromarray(picture).save(str(path))
  print(f'Moving pixels: {masks.mean():.2%} (k_steps {k}, cross_episodes '
        f'{cross})')
  print(f'Picture: {path}')
  return 0


def load_replay(logdir):
  """(config, Replay) from the latest checkpoint, without the agent."""
  import elements
  from dreamerv3 import main as dmain
  from dreamerv3 import tools
  from embodied.core import Checkpoint
  config = tools.load_config(logdir)
  replay = dmain.make_replay(config, 'replay', directory=False)
  replay.directory = elements.Path(logdir / 'replay')  # Chunks come from here.
  checkpoint = Checkpoint(elements.Path(logdir / 'ckpt'))
  checkpoint.register('replay', ReadOnly(replay))
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


def _longest(run):
  slots = (run.replay.data or {}).get('slots', {})
  return max((info['fill'] for info in slots.values()), default=0)


if __name__ == '__main__':
  sys.exit(main())
