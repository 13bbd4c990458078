"""MinAtar envs (MDP and POMDP) against the minatar package stepped by hand."""

import numpy as np
import pytest

minatar = pytest.importorskip('minatar')

from dreamerv3 import main  # noqa: E402
from embodied import envs  # noqa: E402

RESET = {'reset': True, 'action': 0}
GAMES = ['breakout', 'asterix', 'freeway', 'seaquest', 'space_invaders']

# Channels left after dropping motion history, written out by hand from the
# channel docs at the top of each minatar/environments/<game>.py.
POMDP_CHANNELS = {
    'breakout': ['paddle', 'ball', 'brick'],
    'asterix': ['player', 'enemy', 'gold'],
    'freeway': ['chicken', 'car'],
    'seaquest': [
        'sub_front', 'sub_back', 'friendly_bullet', 'enemy_bullet',
        'enemy_fish', 'enemy_sub', 'oxygen_guage', 'diver_guage', 'diver'],
    'space_invaders': ['cannon', 'alien', 'friendly_bullet', 'enemy_bullet'],
}


def act(action):
  return {'reset': False, 'action': np.int32(action)}


def derived_seed(seed):
  # The env seeds MinAtar with one draw from a generator seeded by `seed`.
  return int(np.random.default_rng(seed).integers(2 ** 31))


@pytest.mark.parametrize('game', GAMES)
def test_matches_the_package(game):
  env = envs.make(f'minatar_{game}', seed=3, size=None)
  channels = minatar.Environment(game).state_shape()[2]
  assert env.obs_space['image'].shape == (10, 10, channels)
  assert env.obs_space['image'].dtype == np.uint8
  assert env.act_space['action'].high == 6
  ref = minatar.Environment(game)
  ref.seed(derived_seed(3))
  ref.reset()
  obs = env.step(RESET)
  rng = np.random.default_rng(0)
  ends = 0
  for _ in range(400):
    assert obs['image'].dtype == np.uint8
    assert set(np.unique(obs['image'])) <= {0, 255}
    assert np.array_equal(obs['image'], ref.state() * 255)
    if obs['is_last']:
      assert obs['is_terminal']
      obs = env.step(act(0))
      assert obs['is_first'] and obs['reward'] == 0
      ref.reset()
      ends += 1
      continue
    a = int(rng.integers(6))
    reward, terminal = ref.act(a)
    obs = env.step(act(a))
    assert not obs['is_first']
    assert obs['reward'] == reward and obs['reward'].dtype == np.float32
    assert obs['is_last'] == obs['is_terminal'] == terminal
  if game in ('breakout', 'asterix', 'space_invaders'):
    assert ends > 0  # Random play loses these quickly.


@pytest.mark.parametrize('game', GAMES)
def test_pomdp_drops_exactly_the_trail_channels(game):
  full = envs.make(f'minatar_{game}', seed=5, size=None)
  pomdp = envs.make(f'minatar_pomdp_{game}', seed=5, size=None)
  names = minatar.Environment(game).env.channels
  order = sorted(names, key=names.get)
  keep = [names[n] for n in POMDP_CHANNELS[game]]
  drop = [i for i in range(len(order)) if i not in keep]
  assert pomdp.unwrapped.channels == tuple(POMDP_CHANNELS[game])
  assert pomdp.obs_space['image'].shape == (10, 10, len(keep))
  rng = np.random.default_rng(1)
  seen = np.zeros(len(order), bool)
  a, b = full.step(RESET), pomdp.step(RESET)
  for _ in range(300):
    assert np.array_equal(b['image'], a['image'][:, :, keep])
    assert a['is_last'] == b['is_last'] and a['reward'] == b['reward']
    seen |= a['image'].any((0, 1))
    action = act(rng.integers(6))
    a, b = full.step(action), pomdp.step(action)
  # The dropped channels carried information, so dropping others would fail.
  assert seen[drop].all()


def paddle(obs):
  return int(np.flatnonzero(obs['image'][9, :, 0])[0])


def sticky_fraction(env, steps, seed=0):
  """Fraction of steps on which Breakout applied the previous action.

  The paddle moves one cell per left/right action (blocked at the walls), so
  its move tells which of noop, left, right was applied. Steps where the
  chosen action's move differs from the moves of all possible previous
  actions count; they were sticky iff the paddle did not make the chosen
  move. Actions consistent with the move become the possible previous ones.
  """
  noop, left, right = 0, 1, 3  # MinAtar's action order: n l u r d f.
  move = lambda a, pos: (
      -1 if a == left and pos > 0 else 1 if a == right and pos < 9 else 0)
  rng = np.random.default_rng(seed)
  obs = env.step(RESET)
  prev = {noop, left, right}
  sticky = counted = 0
  for _ in range(steps):
    a = int(rng.choice([noop, left, right]))
    pos = paddle(obs)
    obs = env.step(act(a))
    got = paddle(obs) - pos
    if all(move(p, pos) != move(a, pos) for p in prev):
      counted += 1
      sticky += got != move(a, pos)
    prev = {c for c in prev | {a} if move(c, pos) == got}
    assert prev
    if obs['is_last']:
      obs = env.step(RESET)  # MinAtar keeps its last action across resets.
  return sticky / counted, counted


def test_sticky_actions_probability():
  env = envs.make('minatar_breakout', seed=2, size=None)
  fraction, counted = sticky_fraction(env, 3000)
  assert counted > 1500
  # Standard error ~0.008 at 1500 counted steps.
  assert abs(fraction - 0.1) < 0.035, fraction
  env = envs.make('minatar_breakout', seed=2, size=None, sticky=0.4)
  fraction, counted = sticky_fraction(env, 3000)
  assert abs(fraction - 0.4) < 0.05, fraction
  env = envs.make('minatar_breakout', seed=2, size=None, sticky=0.0)
  fraction, counted = sticky_fraction(env, 500)
  assert counted > 200 and fraction == 0


def test_needed_actions():
  env = envs.make('minatar_breakout', size=None, actions='needed')
  assert env.act_space['action'].high == 3
  env.step(RESET)
  # Needed actions of Breakout are noop, left, right: index 1 moves left.
  before = paddle(env.step(act(0)))
  after = paddle(env.step(act(1)))
  assert after in (before - 1, 0) or env.unwrapped._done


def test_unknown_game_and_bad_options():
  with pytest.raises(envs.UnknownTaskError, match='minatar_pong.*breakout'):
    envs.make('minatar_pong')
  with pytest.raises(envs.UnknownTaskError, match='minatar_pomdp_pong'):
    envs.make('minatar_pomdp_pong')
  with pytest.raises(envs.OptionError, match=r"env\.minatar\.actions.*'x'"):
    envs.make('minatar_breakout', actions='x')
  with pytest.raises(envs.OptionError, match=r'env\.minatar\.sticky'):
    envs.make('minatar_breakout', sticky=-0.1)


@pytest.mark.parametrize('args,shape', [
    (['--configs', 'minatar'], (10, 10, 4)),
    (['--configs', 'minatar', 'size12m'], (10, 10, 4)),
    (['--configs', 'minatar', '--task', 'minatar_pomdp_breakout'], (10, 10, 3)),
    (['--configs', 'minatar', '--task', 'minatar_freeway'], (10, 10, 7)),
])
def test_preset(args, shape):
  config = main.parse(args)
  assert tuple(config.agent.enc.mults) == (2,) == tuple(config.agent.dec.mults)
  env = main.make_env(config, 0)
  assert env.obs_space['image'].shape == shape
  assert env.step(RESET)['image'].shape == shape


# The env's own tests run by default; main.py's path is the same for every
# suite (tests/test_main.py).
@pytest.mark.slow
def test_end_to_end_training(tmp_path):
  """A short debug run through main.py on MinAtar Breakout. ~1 min of
  CPU, mostly XLA compile."""
  import json
  import pathlib
  import subprocess
  import sys
  root = pathlib.Path(__file__).resolve().parent.parent
  logdir = tmp_path / 'run'
  proc = subprocess.run([
      sys.executable, 'dreamerv3/main.py', '--configs', 'minatar', 'debug',
      '--task', 'minatar_breakout', '--logdir', str(logdir),
      '--jax.cache_dir', str(tmp_path / 'cache'), '--run.steps', '250',
      '--run.train_fill', '100', '--run.report_every', '0'],
      cwd=root, capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
  assert 'image uint8(10, 10, 4)' in proc.stdout
  scores = [json.loads(line) for line in
            (logdir / 'scores.jsonl').read_text().splitlines()]
  assert len(scores) >= 2
  for line in scores:
    assert line['episode/length'] >= 1 and line['episode/score'] >= 0
  metrics = (logdir / 'metrics.jsonl').read_text()
  assert 'train/loss/rec' in metrics
  latest = (logdir / 'ckpt' / 'latest').read_text().strip()
  assert latest.endswith('250') and (logdir / 'ckpt' / latest).is_dir()
