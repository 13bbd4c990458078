"""Look at runs in the browser: serves TensorBoard on a logdir, or on a
folder of logdirs to compare them (each run's LOGDIR/tensorboard, written
with --logger.outputs ...,tensorboard).

  pip install -r requirements-viewer.txt      # TensorBoard, once
  python scripts/view.py ~/logdir/run [--port 6006] [--host 0.0.0.0]

Then open http://localhost:6006: Scalars has the curves, Images the
open-loop and policy videos (animated). The same videos are MP4 files in
LOGDIR/videos/ for any player. Stop with Ctrl-C.
"""

import argparse
import importlib.util
import os
import pathlib
import sys


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('logdir', help='a run logdir or a folder of them')
  parser.add_argument('--port', type=int, default=6006)
  parser.add_argument('--host', default='localhost',
                      help='0.0.0.0 to serve other machines too')
  args = parser.parse_args(sys.argv[1:] if argv is None else argv)
  logdir = pathlib.Path(args.logdir).expanduser().resolve()
  if not logdir.is_dir():
    print(f'Error: {logdir} is not a folder', file=sys.stderr)
    return 2
  if importlib.util.find_spec('tensorboard') is None:
    print('Error: the viewer needs TensorBoard: pip install -r '
          'requirements-viewer.txt', file=sys.stderr)
    return 2
  if not any(logdir.rglob('events.out.tfevents.*')):
    print(f'Note: no TensorBoard logs below {logdir} yet; runs write them '
          'with --logger.outputs terminal,jsonl,videos,tensorboard',
          flush=True)
  print(f'TensorBoard on {logdir}: http://{args.host}:{args.port}/',
        flush=True)
  cmd = [sys.executable, '-m', 'tensorboard.main', '--logdir', str(logdir),
         '--port', str(args.port), '--host', args.host, '--reload_interval',
         '15']
  # Replaces this process, so Ctrl-C and signals reach TensorBoard itself.
  os.execv(sys.executable, cmd)


if __name__ == '__main__':
  sys.exit(main())
