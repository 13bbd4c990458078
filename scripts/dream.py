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
  return parser.parse_args(argv)


def main(argv=None):
  args = parse(sys.argv[1:] if argv is None else argv)
  if args.context < 1 or args.horizon < 1:
    print('Error: --context and --horizon must be at least 1',
          file=sys.stderr)
    return 2
  from dreamerv3 import tools
  from embodied.core import video
  try:
    run = tools.Run(args.logdir, replay=True)
  except tools.NoCheckpoint as e:
    print(f'Error: {e}', file=sys.stderr)
    return 2
  path = pathlib.Path(args.video).expanduser().resolve() if args.video \
      else pathlib.Path(args.out).expanduser().resolve() / 'dream.mp4'
  if path == run.logdir or run.logdir in path.parents:
    print(f'Error: {path} is inside the run logdir {run.logdir}; the tools '
          'never write there', file=sys.stderr)
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


def _longest(run):
  slots = (run.replay.data or {}).get('slots', {})
  return max((info['fill'] for info in slots.values()), default=0)


if __name__ == '__main__':
  sys.exit(main())
