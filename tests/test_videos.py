"""Videos: open-loop predictions in the report pass (learned on the moving
block of dummy_block), their layout, frame rendering, video files and every
logger output, policy episode recording, and no videos for vector tasks."""

import json
import pathlib
import subprocess
import sys

import elements
import numpy as np
import pytest

from dreamerv3 import main as dmain
from embodied.core import video
from embodied.envs.dummy import Block
from embodied.run import common

ROOT = pathlib.Path(__file__).resolve().parent.parent
# A small model that learns dummy_block's 16x16 block within 400 updates
# (imagination from the last step only: the actor does not matter here; a
# low free_nats so the prior is trained to be sharp on these deterministic
# moves).
BLOCK = [
    '--configs', 'debug', '--task', 'dummy_block', '--env.size', '16,16',
    '--agent.enc.mults', '2,2', '--agent.dec.mults', '2,2',
    '--agent.dyn.deter', '64', '--agent.dyn.hidden', '64',
    '--agent.dyn.stoch', '8', '--agent.dyn.classes', '8',
    '--.*\\.depth', '8', '--.*\\.units', '64', '--agent.opt.lr', '3e-3',
    '--agent.opt.warmup', '0', '--agent.imag_last', '1',
    '--agent.dyn.free_nats', '0.1', '--batch_size', '8', '--batch_length', '16',
    '--replay_context', '0', '--jax.cache_dir', '']


def block_batch(rng, batch, length, size=(16, 16)):
  """Random-action sequences of dummy_block, one episode each."""
  env_step = lambda env, act: env.step({'action': act, 'reset': False})
  data = {k: [] for k in ('image', 'action', 'reward', 'is_first',
                          'is_last', 'is_terminal')}
  for b in range(batch):
    env = Block(size, episode_length=1000, seed=int(rng.integers(1 << 30)))
    obs = env.step({'action': 0, 'reset': True})
    seq = {k: [] for k in data}
    for t in range(length):
      act = int(rng.integers(5))
      for k in data:
        seq[k].append(act if k == 'action' else obs[k])
      obs = env_step(env, act)
    for k in data:
      data[k].append(np.stack(seq[k]))
  data = {k: np.stack(v) for k, v in data.items()}
  data['action'] = data['action'].astype(np.int32)
  data['stepid'] = np.zeros(data['is_first'].shape, np.int64)
  return data


@pytest.fixture(scope='module')
def block_agent():
  config = dmain.parse(BLOCK)
  env = dmain.make_env(config, 0)
  agent = dmain.make_agent(config, env.obs_space, env.act_space)
  env.close()
  rng = np.random.default_rng(0)
  for _ in range(400):
    agent.train(block_batch(rng, 8, 16))
  return agent


def test_openloop_prediction_learns_moving_block(block_agent):
  data = block_batch(np.random.default_rng(1), 6, 16)
  metrics = block_agent.report(data)
  grid = metrics['openloop/image']
  assert grid.shape == (16, 16 * 3, 16 * 6, 1) and grid.dtype == np.uint8
  truth, pred, diff = grid[:, :16], grid[:, 16:32], grid[:, 32:]
  np.testing.assert_array_equal(
      truth, data['image'].transpose(1, 2, 0, 3, 4).reshape(16, 16, 96, 1))
  np.testing.assert_array_equal(
      diff, np.abs(truth.astype(int) - pred.astype(int)).astype(np.uint8))
  # The imagined half (steps 8-15) has only the actions to go by: the
  # brightest 4x4 cell of each predicted frame is the true block's, and the
  # mean pixel error is well below that of an all-black guess (255 / 16).
  # [T, H, B*W] -> mean of each 4x4 cell [T, B, 16] -> brightest cell.
  cells = lambda x: x.reshape(8, 4, 4, 6, 4, 4).mean((2, 5)).transpose(
      0, 2, 1, 3).reshape(8, 6, 16).argmax(-1)
  hit = (cells(pred[8:].astype(float)) == cells(truth[8:].astype(float)))
  assert hit.mean() >= 0.9, hit.mean()
  error = np.abs(pred[8:].astype(float) - truth[8:].astype(float)).mean()
  assert error < 3.0, error


def test_report_compiles_once_for_its_shape(block_agent):
  before = block_agent.compile_counts()['report']
  for seed in range(2):
    block_agent.report(block_batch(np.random.default_rng(seed), 6, 16))
  assert block_agent.compile_counts()['report'] == before


def test_openloop_grid_layout():
  truth = np.zeros((2, 3, 4, 5, 1), np.uint8)
  truth[1, 2] = 200
  pred = np.full((2, 3, 4, 5, 1), 50.0)
  grid = video.openloop_grid(truth, pred)
  assert grid.shape == (3, 12, 10, 1) and grid.dtype == np.uint8
  assert (grid[2, :4, 5:] == 200).all() and (grid[2, :4, :5] == 0).all()
  assert (grid[:, 4:8] == 50).all()
  assert (grid[2, 8:, 5:] == 150).all() and (grid[0, 8:] == 50).all()


def test_render_gray_palette_and_upscale():
  gray = np.full((2, 10, 10, 1), 7, np.uint8)
  out = video.render(gray)
  assert out.shape == (2, 70, 70, 3) and (out == 7).all()
  minatar = np.zeros((1, 10, 10, 4), np.uint8)
  minatar[0, 0, 0, 2] = 255  # Channel 2 alone: its palette colour.
  out = video.render(minatar)
  assert out.shape == (1, 70, 70, 3)
  np.testing.assert_array_equal(out[0, 0, 0], video.PALETTE[2])
  assert (out[0, -1, -1] == 0).all()
  odd = video.render(np.zeros((1, 65, 67, 3), np.uint8))
  assert odd.shape == (1, 66, 68, 3)
  grid = video.render(np.zeros((3, 30, 60, 1), np.uint8), cell=(10, 10))
  assert grid.shape == (3, 210, 420, 3)


@pytest.mark.parametrize('ext', ['mp4', 'gif'])
def test_video_files_decode_to_frames(tmp_path, ext):
  frames = np.zeros((12, 64, 96, 3), np.uint8)
  for t in range(12):
    frames[t, 8:24, 4 * t:4 * t + 16] = (255, 128, 0)
  path = tmp_path / f'v.{ext}'
  video.write(path, frames, fps=10)
  back = video.read(path)
  assert back.shape == frames.shape
  # H.264 (yuv420p) is lossy; GIF is exact for these few colours.
  limit = 4.0 if ext == 'mp4' else 0.5
  assert np.abs(back.astype(float) - frames).mean() < limit


def video_summaries():
  clip = np.zeros((5, 16, 16, 1), np.uint8)
  clip[:, 4:8, 4:8] = 255
  return ((7, 'report/openloop/image', clip),
          (7, 'train/loss/rec', np.asarray(1.5, np.float32)))


def test_every_logger_output_accepts_videos(tmp_path):
  config = dmain.parse(['--logdir', str(tmp_path), '--logger.outputs',
                        'terminal,jsonl,videos,tensorboard,scope'])
  logger = dmain.make_logger(config)
  for step, name, value in video_summaries():
    logger.step.load(step)
    logger.add({name: value})
  logger.write()
  logger.close()
  files = list((tmp_path / 'videos').glob('*.mp4'))
  assert [f.name for f in files] == ['report-openloop-image-0000000007.mp4']
  assert video.read(files[0]).shape == (5, 16, 16, 3)
  assert (tmp_path / 'scope' / 'report-openloop-image.mp4').exists()
  lines = (tmp_path / 'metrics.jsonl').read_text().splitlines()
  assert json.loads(lines[0]) == {'step': 7, 'train/loss/rec': 1.5}
  events = list((tmp_path / 'tensorboard').glob('events.*'))
  assert events and b'GIF89a' in events[0].read_bytes()


def test_wandb_output_accepts_videos(monkeypatch):
  wandb = pytest.importorskip('wandb')
  logged = []
  monkeypatch.setattr(wandb, 'init', lambda **kw: None)
  monkeypatch.setattr(wandb, 'log', lambda m, step: logged.append(m))
  output = elements.logger.WandBOutput(name='t')
  output(tuple((s, n, video.render(v) if np.ndim(v) == 4 else v)
               for s, n, v in video_summaries()))
  assert isinstance(logged[0]['report/openloop/image'], wandb.Video)


def test_episode_recorder_records_one_whole_episode():
  recorder = video.EpisodeRecorder(worker=0)
  env = Block((16, 16), episode_length=5, seed=0)
  step = lambda act, reset=False: env.step({'action': act, 'reset': reset})
  recorder(step(0, True), 0)  # Not armed yet: ignored.
  recorder.arm()
  for t in range(4):
    recorder(step(4), 0)
    recorder({'image': np.zeros((16, 16, 1)), 'is_first': True,
              'is_last': False}, 1)  # Other workers: ignored.
  assert recorder.done() is None
  frames = []
  for reset in [True] + [False] * 5:
    obs = step(2, reset)
    frames.append(obs['image'])
    recorder(obs, 0)
  result = recorder.done()
  assert list(result) == ['image']
  np.testing.assert_array_equal(result['image'], np.stack(frames))
  assert recorder.done() is None


def test_vector_task_logs_no_video(tmp_path, jax_cache):
  logdir = tmp_path / 'run'
  cmd = [sys.executable, str(ROOT / 'dreamerv3' / 'main.py'),
         '--configs', 'debug', '--task', 'dummy_vector', '--logdir',
         str(logdir), '--run.steps', '120', '--run.report_every', '1',
         '--run.video_every', '1', '--run.log_every', '1',
         '--jax.cache_dir', str(jax_cache)]
  result = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
  assert result.returncode == 0, result.stderr[-2000:]
  assert not (logdir / 'videos').exists()
  keys = set()
  for line in (logdir / 'metrics.jsonl').read_text().splitlines():
    keys |= set(json.loads(line))
  assert any(k.startswith('report/') for k in keys)


def test_policy_video_logs_on_clock():
  logged = []

  class Logger:
    def add(self, mapping):
      logged.append(mapping)

  pv = common.PolicyVideo(every=1e9)
  env = Block((16, 16), episode_length=3, seed=0)
  pv.log(Logger())  # The first call arms the recorder.
  obs = env.step({'action': 0, 'reset': True})
  pv(obs, 0)
  for _ in range(3):
    pv(env.step({'action': 1, 'reset': False}), 0)
  pv.log(Logger())
  assert len(logged) == 1 and logged[0]['policy/image'].shape == (4, 64, 64, 3)
  assert common.PolicyVideo(every=0).clock is None


def test_train_eval_run_logs_all_videos(tmp_path, jax_cache):
  """An image task logs open-loop report videos, training policy episodes
  and eval episodes as MP4 files under LOGDIR/videos."""
  logdir = tmp_path / 'run'
  cmd = [sys.executable, str(ROOT / 'dreamerv3' / 'main.py'),
         '--configs', 'debug', '--task', 'dummy_block', '--script',
         'train_eval', '--logdir', str(logdir), '--env.size', '16,16',
         '--agent.enc.mults', '2,2', '--agent.dec.mults', '2,2',
         # Every few seconds, not every step: each video written costs the
         # loop an encode, and one of each kind is the point.
         '--run.steps', '120', '--run.report_every', '3',
         '--run.video_every', '1', '--run.eval_every', '3',
         '--run.log_every', '1', '--jax.cache_dir', str(jax_cache)]
  result = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
  assert result.returncode == 0, result.stderr[-2000:]
  names = {p.name.rsplit('-', 1)[0]: p for p in (logdir / 'videos').iterdir()}
  assert set(names) == {
      'report-openloop-image', 'policy-image', 'eval_policy-image'}, names
  # debug: report sequences of batch_length 8 (+1 context), 6 side by side;
  # 16x16 frames scaled by 4.
  assert video.read(names['report-openloop-image']).shape == (
      8, 3 * 64, 6 * 64, 3)
  assert video.read(names['policy-image']).shape == (21, 64, 64, 3)
  assert video.read(names['eval_policy-image']).shape == (21, 64, 64, 3)
