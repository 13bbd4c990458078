"""scripts/play.py and scripts/dream.py on the checkpoint of a short
dummy_block run (conftest.py's tiny_run), as a user runs them: exit status,
videos and pictures written, the run's logdir byte-for-byte untouched,
--step driven from piped stdin; and scripts/view.py serving the run through
TensorBoard (skipped when tensorboard is not installed)."""

import hashlib
import json
import pathlib
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request

import numpy as np
import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
SCRIPTS = ROOT / 'scripts'


def run_script(name, *args, stdin=None, cwd=None, timeout=300):
  return subprocess.run(
      [sys.executable, str(SCRIPTS / name), *map(str, args)],
      input=stdin, capture_output=True, text=True, timeout=timeout, cwd=cwd)


def tree_hash(path):
  """Hash of every file's name and bytes below path."""
  digest = hashlib.sha256()
  for file in sorted(pathlib.Path(path).rglob('*')):
    digest.update(str(file.relative_to(path)).encode())
    if file.is_file():
      digest.update(file.read_bytes())
  return digest.hexdigest()


@pytest.fixture(scope='module')
def logdir(tiny_run):
  """A finished short run with a checkpoint, replay and TensorBoard logs."""
  return tiny_run[0]


def test_play_writes_video_and_leaves_logdir(logdir, tmp_path):
  from embodied.core import video
  before = tree_hash(logdir)
  result = run_script('play.py', '--logdir', logdir, '--episodes', '2',
                      cwd=tmp_path)
  assert result.returncode == 0, result.stderr[-2000:]
  assert result.stdout.count('Episode ') == 2
  assert 'Episode 1: score' in result.stdout
  frames = video.read(tmp_path / 'play.mp4')
  # debug: 20-step episodes, 21 frames each; 16x16 upscaled to 64x64.
  assert frames.shape == (42, 64, 64, 3)
  assert tree_hash(logdir) == before


def test_play_step_from_piped_stdin(logdir, tmp_path):
  before = tree_hash(logdir)
  out = tmp_path / 'out'
  result = run_script('play.py', '--logdir', logdir, '--step', '--out', out,
                      '--video', tmp_path / 'v.gif', stdin='\n\n\n')
  assert result.returncode == 0, result.stderr[-2000:]
  lines = [l for l in result.stdout.splitlines() if l.startswith('episode')]
  # Three Enters then end of input: four paused frames, then it plays on.
  assert len(lines) == 4
  assert ' | action action ' in lines[0] and ' | value ' in lines[0]
  assert (out / 'frame.png').exists() and (tmp_path / 'v.gif').exists()
  assert tree_hash(logdir) == before


@pytest.mark.parametrize('actions', ['replay', 'policy'])
def test_dream_writes_video_and_leaves_logdir(logdir, tmp_path, actions):
  from embodied.core import video
  before = tree_hash(logdir)
  result = run_script('dream.py', '--logdir', logdir, '--context', '3',
                      '--horizon', '5', '--actions', actions, cwd=tmp_path)
  assert result.returncode == 0, result.stderr[-2000:]
  assert 'Dreamed 5 steps after 3 observed' in result.stdout
  frames = video.read(tmp_path / 'dream.mp4')
  # 8 frames, a 4 px bar above 64 px frames; real | dream side by side.
  width = 128 if actions == 'replay' else 64
  assert frames.shape == (8, 68, width, 3)
  assert tree_hash(logdir) == before


@pytest.mark.parametrize('script', ['play.py', 'dream.py'])
def test_tools_refuse_logdir_without_checkpoint(tmp_path, script):
  (tmp_path / 'config.yaml').write_text('task: dummy_block\n')
  result = run_script(script, '--logdir', tmp_path, cwd=tmp_path)
  assert result.returncode == 2
  assert len(result.stderr.strip().splitlines()) == 1
  assert 'no complete checkpoint' in result.stderr


@pytest.mark.parametrize('mode', [[], ['--masks']])
def test_tools_refuse_output_inside_logdir(logdir, mode):
  before = tree_hash(logdir)
  result = run_script('dream.py', '--logdir', logdir, '--out', logdir, *mode)
  assert result.returncode == 2 and 'inside the run logdir' in result.stderr
  assert tree_hash(logdir) == before


def test_dream_masks_picture(logdir, tmp_path, capsys):
  # In this process: --masks loads no agent, so a process of its own would
  # only add start-up time (tests/test_masking.py checks the mask pixels).
  import importlib.util
  from PIL import Image
  spec = importlib.util.spec_from_file_location('dream', SCRIPTS / 'dream.py')
  dream = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(dream)
  before = tree_hash(logdir)
  assert dream.main(['--logdir', str(logdir), '--masks', '--length', '4',
                     '--out', str(tmp_path / 'out')]) == 0
  assert 'Moving pixels: ' in capsys.readouterr().out
  picture = np.asarray(Image.open(tmp_path / 'out' / 'mask_strip_image.png'))
  # 2 sequences of frame + mask rows, 4 frames of 16 + 2 pixels, scale 2.
  assert picture.shape == (2 * 2 * 18 * 2, 4 * 18 * 2, 3)
  assert tree_hash(logdir) == before


def _free_port():
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


def _get(url, timeout=60):
  deadline = time.time() + timeout
  while True:
    try:
      with urllib.request.urlopen(url, timeout=5) as response:
        return response.read()
    except OSError:
      if time.time() > deadline:
        raise
      time.sleep(0.5)


def test_viewer_serves_scalars(logdir):
  pytest.importorskip('tensorboard')
  port = _free_port()
  proc = subprocess.Popen(
      [sys.executable, str(SCRIPTS / 'view.py'), str(logdir.parent),
       '--port', str(port)], stdout=subprocess.PIPE,
      stderr=subprocess.STDOUT, text=True)
  try:
    base = f'http://127.0.0.1:{port}'
    page = _get(base + '/')
    assert b'<html' in page.lower() or b'tf-tensorboard' in page
    tags = json.loads(_get(base + '/data/plugin/scalars/tags'))
    run = f'{logdir.name}/tensorboard'
    assert run in tags and 'episode/score' in tags[run], tags
    query = urllib.parse.urlencode({'run': run, 'tag': 'episode/score'})
    series = json.loads(_get(f'{base}/data/plugin/scalars/scalars?{query}'))
    assert series and len(series[0]) == 3  # [wall time, step, value]
  finally:
    proc.terminate()
    proc.wait(timeout=30)
