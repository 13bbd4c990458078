"""Watch a trained agent play: loads the latest checkpoint of a run, plays
episodes in the real env, prints each episode's score and writes a video.

  python scripts/play.py --logdir ~/logdir/run [--episodes 3] [--video out.mp4]
  python scripts/play.py --logdir ~/logdir/run --step   # Enter steps a frame

--step pauses before every env step: it writes the current frame to
OUT/frame.png (and prints MinAtar-style multi-channel images as text) with
the action, reward and the critic's value, then waits for a line on stdin
(Enter: next frame, q: quit; at end of input it plays on without pausing).
Nothing is written into the run's logdir: outputs go to --out (default: the
current directory). A logdir without a checkpoint exits with status 2.
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
  parser.add_argument('--episodes', type=int, default=1)
  parser.add_argument('--video', default='',
                      help='video file (.mp4 or .gif); default OUT/play.mp4')
  parser.add_argument('--out', default='.', help='folder for default outputs')
  parser.add_argument('--step', action='store_true',
                      help='pause at every frame until Enter')
  parser.add_argument('--mode', default='eval', choices=('eval', 'train'))
  parser.add_argument('--max-steps', type=int, default=10000,
                      help='cut an episode after this many steps')
  parser.add_argument('--seed', type=int, default=12345,
                      help='env seed index (other than the run envs)')
  return parser.parse_args(argv)


def main(argv=None):
  args = parse(sys.argv[1:] if argv is None else argv)
  from dreamerv3 import tools
  from embodied.core import video
  try:
    run = tools.Run(args.logdir)
  except tools.NoCheckpoint as e:
    print(f'Error: {e}', file=sys.stderr)
    return 2
  out = pathlib.Path(args.out).expanduser().resolve()
  _check_outside(out, run.logdir)
  path = pathlib.Path(args.video).expanduser().resolve() if args.video \
      else out / 'play.mp4'
  _check_outside(path, run.logdir)
  out.mkdir(parents=True, exist_ok=True)

  agent = run.agent
  value_fn = run.value_fn()
  env = run.make_env(args.seed)
  frames = {k: [] for k in run.images}
  pause = args.step
  scores = []
  for episode in range(args.episodes):
    obs = env.step({**_noop(run.act_space), 'reset': True})
    carry = agent.init_policy(1)
    score, t = 0.0, 0
    while True:
      for key in run.images:
        frames[key].append(obs[key])
      batch = {k: np.asarray(obs[k])[None] for k in agent.obs_space}
      carry, act, _ = agent.policy(carry, batch, mode=args.mode)
      act = {k: v[0] for k, v in act.items()}
      if pause:
        value = float(value_fn(carry)[0])
        pause = _show(out, run.images, obs, act, value, episode, t)
      if obs['is_last'] or t >= args.max_steps:
        break
      obs = env.step({**act, 'reset': False})
      score += float(obs['reward'])
      t += 1
    scores.append(score)
    print(f'Episode {episode + 1}: score {score:.2f}, length {t}', flush=True)
  env.close()
  print(f'Mean score {np.mean(scores):.2f} over {len(scores)} episode(s)')
  if not run.images:
    print('The task has no image observations: no video written.')
    return 0
  # Several image keys are shown side by side.
  clips = [video.render(np.stack(frames[k])) for k in run.images]
  height = max(c.shape[1] for c in clips)
  clips = [np.pad(c, ((0, 0), (0, height - c.shape[1]), (0, 0), (0, 0)))
           for c in clips]
  video.write(path, np.concatenate(clips, 2), run.config.logger.fps)
  print(f'Video: {path}')
  return 0


def _show(out, images, obs, act, value, episode, t):
  """Writes the frame, prints the step; returns whether to keep pausing."""
  from PIL import Image
  from dreamerv3 import tools
  from embodied.core import video
  action = ', '.join(f'{k} {np.round(v, 3).tolist()}' for k, v in act.items())
  print(f'episode {episode + 1} step {t} | action {action} | reward '
        f"{float(obs['reward']):.3f} | value {value:.3f}", flush=True)
  for key in images:
    frame = video.render(np.asarray(obs[key])[None])[0]
    name = 'frame.png' if len(images) == 1 else f'frame-{key}.png'
    Image.fromarray(frame).save(out / name)
    if obs[key].shape[-1] not in (1, 3):
      print(tools.ascii_frame(obs[key]))
  line = sys.stdin.readline()
  if line.strip().lower() == 'q':
    raise SystemExit(0)
  return bool(line)


def _noop(act_space):
  return {k: np.zeros(s.shape, s.dtype) for k, s in act_space.items()
          if k != 'reset'}


def _check_outside(path, logdir):
  if path == logdir or logdir in path.parents:
    print(f'Error: {path} is inside the run logdir {logdir}; the tools '
          'never write there (choose another --out or --video)',
          file=sys.stderr)
    raise SystemExit(2)


if __name__ == '__main__':
  sys.exit(main())
