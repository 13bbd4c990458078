"""Atari and Atari100k envs against a plain ALEInterface stepped by hand."""

import numpy as np
import pytest

ale_py = pytest.importorskip('ale_py')

from ale_py import roms  # noqa: E402

from dreamerv3 import main  # noqa: E402
from embodied import envs  # noqa: E402
from embodied.envs import atari  # noqa: E402

RESET = {'reset': True, 'action': 0}


def act(action):
  return {'reset': False, 'action': np.int32(action)}


def plain_ale(game, seed, sticky=0.0):
  ale = ale_py.ALEInterface()
  ale.setLoggerMode(ale_py.LoggerMode.Error)
  ale.setInt('random_seed', int(seed))
  ale.setFloat('repeat_action_probability', float(sticky))
  ale.loadROM(str(roms.get_rom_path(game)))
  return ale


def gray(rgb):
  """The reference DreamerV3's conversion: luma-weighted sum of RGB,
  truncated to uint8."""
  rgb = rgb.astype(np.float64)
  return (0.299 * rgb[..., 0] + 0.587 * rgb[..., 1] +
          0.114 * rgb[..., 2]).astype(np.uint8)


def native(**kwargs):
  """Unresized frames, so obs compare exactly with the ALE's screens."""
  return dict(size=(210, 160), sticky=0.0, **kwargs)


@pytest.mark.parametrize('gray', [False, True])
def test_action_repeat_reward_sum_and_max_pool(gray):
  gray_of = globals()['gray']
  env = atari.make('pong', seed=1, **native(gray=gray))
  obs = env.step(RESET)
  noops = env.ale.getEpisodeFrameNumber()
  ref = plain_ale('pong', env.ale.getInt('random_seed'))
  screen = ref.getScreenRGB
  shape = lambda x: gray_of(x)[:, :, None] if gray else x
  ref.reset_game()
  for _ in range(noops):
    ref.act(ale_py.Action.NOOP)
  assert np.array_equal(obs['image'], shape(screen()))
  actions = ref.getLegalActionSet()
  rng = np.random.default_rng(0)
  rewards, pooled = [], 0
  for _ in range(300):
    a = int(rng.integers(len(actions)))
    obs = env.step(act(a))
    reward, frames = 0, []
    for _ in range(4):
      reward += ref.act(actions[a])
      frames.append(screen())
    expected = np.maximum(frames[-2], frames[-1])
    assert obs['reward'] == reward
    assert np.array_equal(obs['image'], shape(expected))
    assert not obs['is_last'] and not obs['is_terminal']
    rewards.append(reward)
    pooled += not np.array_equal(expected, frames[-1])
  # Both checks can fail: points were scored and the max mattered.
  assert any(rewards) and pooled > 0


def test_noop_starts_are_uniform():
  env = atari.make('pong', seed=2, **native(noops=30))
  counts = []
  for _ in range(400):
    obs = env.step(RESET)
    assert obs['is_first'] and obs['reward'] == 0
    counts.append(env.ale.getEpisodeFrameNumber())
  counts = np.array(counts)
  # Every count in 0..30 appears (each misses with prob. (30/31)^400 ~ 2e-6),
  # and the mean is 15 within 4 standard errors.
  assert set(counts) == set(range(31))
  assert abs(counts.mean() - 15) < 4 * np.sqrt((31 ** 2 - 1) / 12 / 400)
  env = atari.make('pong', seed=2, **native(noops=0))
  for _ in range(5):
    env.step(RESET)
    assert env.ale.getEpisodeFrameNumber() == 0


def test_first_frame_after_noops_matches_plain_ale():
  env = atari.make('breakout', seed=3, **native(noops=30))
  for _ in range(3):
    obs = env.step(RESET)
    noops = env.ale.getEpisodeFrameNumber()
    ref = plain_ale('breakout', env.ale.getInt('random_seed'))
    ref.reset_game()
    for _ in range(noops):
      ref.act(ale_py.Action.NOOP)
    assert np.array_equal(obs['image'][:, :, 0], gray(ref.getScreenRGB()))


def sticky_fraction(env, steps, seed=0):
  """Fraction of steps on which the emulator kept the previous action.

  Before each one-frame step, a p=0 reference ALE restored to the env's
  state computes the outcome of the chosen action and of every action that
  may be the previous one. Steps where the chosen action's outcome differs
  from all of those count; they were sticky iff the env's outcome is not the
  chosen one's. The actions consistent with the outcome become the
  candidates for the previous action.
  """
  ale = env.ale
  ref = plain_ale(env.game, 0)
  actions = ale.getMinimalActionSet()
  index = {a: i for i, a in enumerate(env._actions)}
  rng = np.random.default_rng(seed)
  env.step(RESET)
  prev = set(actions)  # Unknown after a reset.
  sticky = counted = 0
  for _ in range(steps):
    a = actions[int(rng.integers(len(actions)))]
    state = ale.cloneState()
    outcomes = {}
    for cand in prev | {a}:
      ref.restoreState(state)
      ref.act(cand)
      outcomes[cand] = (ref.getRAM().tobytes(), ref.getScreen().tobytes())
    obs = env.step(act(index[a]))
    got = (ale.getRAM().tobytes(), ale.getScreen().tobytes())
    assert got in outcomes.values()
    if all(outcomes[p] != outcomes[a] for p in prev):
      counted += 1
      sticky += got != outcomes[a]
    prev = {c for c, out in outcomes.items() if out == got}
    if obs['is_last']:
      env.step(RESET)
      prev = set(actions)
  return sticky / counted, counted


def test_sticky_actions_probability():
  env = atari.make('breakout', seed=4, repeat=1, noops=0, actions='needed')
  assert env.ale.getFloat('repeat_action_probability') == 0.25
  fraction, counted = sticky_fraction(env, 1500)
  assert counted > 600
  # Standard error ~0.018 at 600 counted steps.
  assert abs(fraction - 0.25) < 0.07, fraction
  env = atari.make(
      'breakout', seed=4, repeat=1, noops=0, actions='needed', sticky=0.0)
  fraction, counted = sticky_fraction(env, 300)
  assert counted > 100 and fraction == 0


def test_game_over_is_terminal():
  env = atari.make('pong', seed=5, size=(64, 64), noops=0)
  obs = env.step(RESET)
  rng = np.random.default_rng(0)
  score, steps = 0.0, 0
  while not obs['is_last']:
    assert not obs['is_terminal']
    obs = env.step(act(rng.integers(18)))
    score += obs['reward']
    steps += 1
    assert steps < 5000
  assert obs['is_terminal'] and env.ale.game_over()
  # Pong ends when a side reaches 21 points.
  assert score <= -1 and score >= -21
  obs = env.step(act(0))  # Any step after the end resets.
  assert obs['is_first'] and env.ale.getEpisodeFrameNumber() == 0


def test_frame_cap_truncates_without_terminal():
  env = atari.make('pong', seed=6, size=(64, 64), noops=0, max_frames=200)
  env.step(RESET)
  for step in range(1, 51):
    obs = env.step(act(1))
    assert obs['is_last'] == (step == 50), step
    assert not obs['is_terminal']
  assert env.ale.getEpisodeFrameNumber() == 200
  obs = env.step(act(1))
  assert obs['is_first'] and env.ale.getEpisodeFrameNumber() == 0


def test_frame_cap_counts_frames_after_the_noop_start():
  # As the reference counts them: the no-op frames of the reset are not
  # part of the episode's 200 frames.
  env = atari.make('pong', seed=6, size=(64, 64), noops=30, max_frames=200)
  starts = set()
  for _ in range(4):
    env.step(RESET)
    noops = env.ale.getEpisodeFrameNumber()
    starts.add(noops)
    for step in range(1, 51):
      obs = env.step(act(1))
      assert obs['is_last'] == (step == 50), (noops, step)
    assert env.ale.getEpisodeFrameNumber() == noops + 200
  assert len(starts) > 1  # Different no-op starts, same episode length.


def test_gray_is_the_luma_of_the_resized_rgb_frame():
  kw = dict(seed=8, size=(64, 48), noops=5, sticky=0.0)
  color = atari.make('breakout', gray=False, **kw)
  mono = atari.make('breakout', gray=True, **kw)
  rng = np.random.default_rng(0)
  for i in range(30):
    a = RESET if i == 0 else act(rng.integers(4))
    want, got = color.step(a)['image'], mono.step(a)['image']
    assert got.shape == (64, 48, 1)
    np.testing.assert_array_equal(got[:, :, 0], gray(want))


def test_forced_reset_restarts_the_game():
  env = atari.make('pong', seed=6, size=(64, 64), noops=0)
  env.step(RESET)
  for _ in range(10):
    env.step(act(0))
  obs = env.step(RESET)
  assert obs['is_first'] and env.ale.getEpisodeFrameNumber() == 0


def run_until_life_loss(env, rng, limit=3000):
  lives = env.ale.lives()
  for _ in range(limit):
    obs = env.step(act(rng.integers(4)))
    if env.ale.lives() < lives or obs['is_last']:
      return obs
    assert not obs['is_terminal']
  raise AssertionError('no life lost')


@pytest.mark.parametrize('mode', ['unused', 'discount', 'reset'])
def test_lives(mode):
  env = atari.make(
      'breakout', seed=7, size=(64, 64), noops=0, actions='needed',
      lives=mode)
  rng = np.random.default_rng(0)
  env.step(RESET)
  assert env.ale.lives() == 5
  obs = run_until_life_loss(env, rng)
  assert env.ale.lives() == 4
  assert obs['is_terminal'] == (mode != 'unused')
  assert obs['is_last'] == (mode == 'reset')
  frames = env.ale.getEpisodeFrameNumber()
  obs = env.step(act(0))
  if mode == 'reset':
    # A new episode that continues the same game.
    assert obs['is_first'] and env.ale.lives() == 4
    assert env.ale.getEpisodeFrameNumber() == frames
  else:
    assert not obs['is_first']
  # Play on to the game over, which ends the episode in every mode.
  while True:
    obs = run_until_life_loss(env, rng)
    if env.ale.game_over():
      break
    if obs['is_last']:
      env.step(act(0))
  assert obs['is_last'] and obs['is_terminal']
  obs = env.step(act(0))
  assert obs['is_first'] and env.ale.lives() == 5


def test_reward_clipping():
  envs_ = [atari.make('space_invaders', seed=8, size=(64, 64), sticky=0.0,
                      clip_reward=clip) for clip in (False, True)]
  for env in envs_:
    env.step(RESET)
  rng = np.random.default_rng(0)
  raw, clipped = [], []
  for _ in range(300):
    a = rng.integers(18)
    raw.append(envs_[0].step(act(a))['reward'])
    clipped.append(envs_[1].step(act(a))['reward'])
  raw, clipped = np.array(raw), np.array(clipped)
  assert (raw > 1).any()  # Space Invaders pays 5 to 30 per alien.
  assert np.array_equal(clipped, np.sign(raw))


@pytest.mark.parametrize('game,minimal', [
    ('pong', 6), ('ms_pacman', 9), ('battle_zone', 18),
    ('space_invaders', 6)])
def test_snake_case_names_load_their_rom(game, minimal):
  env = envs.make(f'atari100k_{game}', size=(210, 160), noops=0)
  inner = env.unwrapped
  assert inner.game == game
  ref = plain_ale(game, inner.ale.getInt('random_seed'))
  assert list(inner.ale.getMinimalActionSet()) == list(
      ref.getMinimalActionSet())
  assert len(ref.getMinimalActionSet()) == minimal
  ref.reset_game()
  assert np.array_equal(env.step(RESET)['image'], ref.getScreenRGB())


def test_action_sets():
  assert atari.make('pong', actions='all').act_space['action'].high == 18
  assert atari.make('pong', actions='needed').act_space['action'].high == 6


def test_unknown_game_and_bad_options():
  with pytest.raises(envs.UnknownTaskError, match="atari_pongg.*pong"):
    envs.make('atari_pongg')
  with pytest.raises(envs.UnknownTaskError, match='atari100k_nope.*ms_pacman'):
    envs.make('atari100k_nope')
  with pytest.raises(envs.OptionError, match=r"env\.atari\.actions.*'some'"):
    envs.make('atari_pong', actions='some')
  with pytest.raises(envs.OptionError, match=r"env\.atari100k\.lives.*'x'"):
    envs.make('atari100k_pong', lives='x')
  with pytest.raises(envs.OptionError, match=r'env\.atari\.sticky.*1\.5'):
    envs.make('atari_pong', sticky=1.5)
  with pytest.raises(envs.OptionError, match=r'env\.atari\.colour'):
    envs.make('atari_pong', colour=True)


def test_unknown_game_through_main(tmp_path):
  logdir = tmp_path / 'run'
  with pytest.raises(main.ConfigError, match='atari_pongg'):
    main.main(['--task', 'atari_pongg', '--logdir', str(logdir)])
  with pytest.raises(main.ConfigError, match=r'env\.atari\.lives'):
    main.main(['--configs', 'atari', '--env.atari.lives', 'never',
               '--logdir', str(logdir)])
  assert not logdir.exists()


@pytest.mark.parametrize('blocks,shape,sticky,envs_,steps,actions', [
    (['atari'], (96, 96, 1), 0.25, 16, 5.1e7, 18),
    (['atari', 'size12m'], (96, 96, 1), 0.25, 16, 5.1e7, 18),
    # Atari100k uses the game's minimal action set, as published.
    (['atari100k'], (64, 64, 3), 0.0, 1, 1e5, 6),
    (['atari100k', 'size12m'], (64, 64, 3), 0.0, 1, 1e5, 6),
    (['atari100k', '--task', 'atari100k_breakout'], (64, 64, 3), 0.0, 1,
     1e5, 4),
])
def test_presets(blocks, shape, sticky, envs_, steps, actions):
  config = main.parse(['--configs', *blocks])
  assert config.run.envs == envs_ and config.run.steps == steps
  if 'size12m' in blocks:
    assert config.agent.enc.depth == 16
  env = main.make_env(config, 0)
  assert env.obs_space['image'].shape == shape
  assert env.act_space['action'].high == actions
  assert env.unwrapped.ale.getFloat('repeat_action_probability') == sticky
  obs = env.step(RESET)
  assert obs['image'].shape == shape and obs['image'].dtype == np.uint8
  obs = env.step(act(3))
  assert obs['image'].shape == shape
  assert obs['reward'].dtype == np.float32
  for key in ('is_first', 'is_last', 'is_terminal'):
    assert obs[key].dtype == bool


def test_resize_methods():
  from PIL import Image
  for method, pil in [('bilinear', Image.Resampling.BILINEAR),
                      ('area', Image.Resampling.BOX)]:
    env = atari.make('pong', size=(64, 48), gray=False, noops=0,
                     resize=method)
    obs = env.step(RESET)
    raw = env.ale.getScreenRGB()
    expected = np.asarray(Image.fromarray(raw).resize((48, 64), pil))
    assert obs['image'].shape == (64, 48, 3)
    assert np.array_equal(obs['image'], expected)


# The default run trains atari100k end to end in the GPU check's CPU dry
# run (tests/test_gpu_check.py); this one adds the 64x64 frames and the
# frame cap seen from main.py.
@pytest.mark.slow
def test_end_to_end_training(tmp_path):
  """A short debug run through main.py: episodes capped at 400
  frames. ~1.5 min of CPU, mostly XLA compile."""
  import json
  import pathlib
  import subprocess
  import sys
  root = pathlib.Path(__file__).resolve().parent.parent
  logdir = tmp_path / 'run'
  proc = subprocess.run([
      sys.executable, 'dreamerv3/main.py', '--configs', 'atari100k', 'debug',
      '--task', 'atari100k_pong', '--logdir', str(logdir),
      '--jax.cache_dir', str(tmp_path / 'cache'), '--run.steps', '250',
      '--run.train_fill', '100', '--run.report_every', '0',
      '--env.atari100k.max_frames', '400'],
      cwd=root, capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
  assert 'image uint8(64, 64, 3)' in proc.stdout
  scores = [json.loads(line) for line in
            (logdir / 'scores.jsonl').read_text().splitlines()]
  assert len(scores) >= 2
  for line in scores:
    # 400 frames less up to 30 no-op frames, 4 frames per step.
    assert 92 <= line['episode/length'] <= 100
    assert -21 <= line['episode/score'] <= 21
  metrics = (logdir / 'metrics.jsonl').read_text()
  assert 'train/loss/rec' in metrics
  latest = (logdir / 'ckpt' / 'latest').read_text().strip()
  assert latest.endswith('250') and (logdir / 'ckpt' / latest).is_dir()
