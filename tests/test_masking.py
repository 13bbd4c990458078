"""Masked pixel loss (dreamerv3/masking.py) against a plain Python loop, and
its effect on the agent's image loss."""

import jax
import jax.numpy as jnp
import ninjax as nj
import numpy as np
import pytest

from dreamerv3 import main as dmain
from dreamerv3 import validate
from dreamerv3 import masking
from dreamerv3.agent import Dreamer
from embodied.jax import outs
from tests.helpers import fill_params


def loop_mask(images, is_first, k, cross_episodes):
  """The obvious reference: compare every step with every step of its
  window, skipping pairs with an episode start between them."""
  B, T = images.shape[:2]
  mask = np.zeros(images.shape, bool)
  for b in range(B):
    for t in range(T):
      for j in range(max(0, t - k), min(T, t + k + 1)):
        lo, hi = min(t, j), max(t, j)
        if not cross_episodes and is_first[b, lo + 1:hi + 1].any():
          continue
        mask[b, t] |= images[b, t] != images[b, j]
  return mask


def random_sequences(seed, B, T, shape, starts=0.15):
  """Mostly static frames with a few changing pixels and episode starts."""
  rng = np.random.default_rng(seed)
  base = rng.integers(0, 256, (B, 1, *shape), np.uint8)
  images = np.repeat(base, T, 1)
  change = rng.uniform(size=images.shape) < 0.1
  images = np.where(change, rng.integers(0, 3, images.shape), images)
  images = images.astype(np.uint8)
  is_first = rng.uniform(size=(B, T)) < starts
  is_first[:, 0] = True
  return images, is_first


@pytest.mark.parametrize('k', [0, 1, 2, 3, 7, 20])
@pytest.mark.parametrize('cross_episodes', [False, True])
@pytest.mark.parametrize('shape', [(5, 4, 1), (3, 4, 3)])
def test_mask_equals_loop(k, cross_episodes, shape):
  images, is_first = random_sequences(k, 3, 9, shape)
  got = jax.jit(masking.moving_mask, static_argnums=(2, 3))(
      images, is_first, k, cross_episodes)
  want = loop_mask(images, is_first, k, cross_episodes)
  np.testing.assert_array_equal(np.asarray(got), want)


def test_mask_edges_and_episode_start():
  # One pixel, one sequence: value changes at t=4, where an episode starts.
  images = np.array([1, 1, 1, 1, 7, 7, 7, 9, 9], np.uint8)[None, :, None]
  is_first = np.zeros((1, 9), bool)
  is_first[0, [0, 4]] = True
  mask = lambda k, cross: np.asarray(
      masking.moving_mask(images, is_first, k, cross))[0, :, 0].astype(int)
  # Within episodes only the change 7 -> 9 at t=7 counts.
  np.testing.assert_array_equal(mask(1, False), [0, 0, 0, 0, 0, 0, 1, 1, 0])
  np.testing.assert_array_equal(mask(2, False), [0, 0, 0, 0, 0, 1, 1, 1, 1])
  # Across episodes the reset at t=4 counts too; the window is cut at the
  # sequence edges (t=0 sees only t=0..2).
  np.testing.assert_array_equal(mask(2, True), [0, 0, 1, 1, 1, 1, 1, 1, 1])
  np.testing.assert_array_equal(mask(0, True), [0] * 9)


def test_weights_and_alpha_one_is_exact():
  images, is_first = random_sequences(0, 2, 6, (4, 4, 3))
  moving = masking.moving_mask(images, is_first, 2, False)
  w = np.asarray(masking.mask_weights(moving, 5.0))
  assert set(np.unique(w)) <= {1.0, 5.0}
  np.testing.assert_array_equal(w == 5.0, np.asarray(moving))
  rng = np.random.default_rng(1)
  pred = outs.MSE(jnp.asarray(rng.uniform(size=images.shape), jnp.float32),
                  3, squash=lambda t: t / 255.0)
  ones = masking.mask_weights(moving, 1.0)
  np.testing.assert_array_equal(
      np.asarray(pred.loss(images, ones)), np.asarray(pred.loss(images)))
  # Weighted squared error summed per frame, by hand.
  err = (np.asarray(pred.mean) - images / 255.0) ** 2
  np.testing.assert_allclose(
      np.asarray(pred.loss(images, w)), (err * w).sum((2, 3, 4)), rtol=1e-5)


def test_config_errors():
  for flags, key in [(['--masking.k_steps', '-1'], 'masking.k_steps'),
                     (['--masking.alpha_strength', '-2'],
                      'masking.alpha_strength')]:
    config = dmain.parse(['--configs', 'debug'] + flags)
    with pytest.raises(dmain.ConfigError, match=key):
      dmain.check_values(config)


def test_needs_image_observations():
  config = dmain.parse(['--configs', 'debug', '--task', 'dummy_vector',
                        '--dynamics.masked_loss', 'True'])
  env = dmain.make_env(config, 0)
  # The extension's own space check, run before the logdir is touched.
  with pytest.raises(dmain.ConfigError, match='masking.enabled True needs image'):
    validate.check_spaces(config, env.obs_space)


class ImageAgentLoss:
  """Dreamer.loss on a small image task with shared random parameters."""

  ARGS = ['--configs', 'debug', '--task', 'dummy_image', '--env.size', '16',
          '16', '--batch_length', '6']

  def __init__(self):
    config = dmain.parse(self.ARGS)
    env = dmain.make_env(config, 0)
    act_space = {k: v for k, v in env.act_space.items() if k != 'reset'}
    self.spaces = env.obs_space, act_space
    env.close()
    rng = np.random.default_rng(0)
    B, L = config.batch_size, config.batch_length + config.replay_context
    images, is_first = random_sequences(3, B, L, (16, 16, 3))
    self.data = {
        'image': images, 'is_first': is_first,
        'is_last': np.roll(is_first, -1, 1),
        'is_terminal': np.zeros((B, L), bool),
        'reward': rng.normal(0, 1, (B, L)).astype(np.float32),
        'action': rng.integers(0, 6, (B, L)).astype(np.int32),
        'stepid': np.arange(B * L).reshape(B, L)}
    self.state = None

  def __call__(self, argv):
    config = dmain.agent_config(dmain.parse(self.ARGS + argv))
    model = Dreamer(*self.spaces, config, name='agent')
    if self.state is None:
      self.state = fill_params(model.loss, self.data)
    _, (_, (_, metrics)) = jax.jit(nj.pure(model.loss))(
        self.state, self.data, seed=np.uint32([1, 2]))
    return {k: float(v) for k, v in metrics.items()}


def test_agent_image_loss_with_mask():
  loss = ImageAgentLoss()
  plain = loss([])
  ones = loss(['--dynamics.masked_loss', 'True',
               '--dynamics.alpha_strength', '1'])
  five = loss(['--dynamics.masked_loss', 'True'])
  assert 'masking/moving_frac_image' not in plain
  # Equal up to float32 rounding (XLA may fuse the weighted sum otherwise).
  same = lambda a, b: a == pytest.approx(b, rel=1e-6)
  assert same(ones['loss/rec_image'], plain['loss/rec_image'])
  assert same(ones['loss/rec_image_unweighted'], plain['loss/rec_image'])
  assert same(five['loss/rec_image_unweighted'], plain['loss/rec_image'])
  frac = five['masking/moving_frac_image']
  images = loss.data['image'][:, 1:]  # Without the replay context step.
  want = loop_mask(images, loss.data['is_first'][:, 1:], 3, False).mean()
  assert frac == pytest.approx(want)
  assert 0 < frac < 1
  assert five['loss/rec_image'] > 1.5 * plain['loss/rec_image']


def test_mask_strip_from_logdir(tmp_path):
  """scripts/dream.py --masks on a logdir holding a checkpointed replay with
  one pixel that blinks: the mask row is white exactly there."""
  import importlib.util
  import pathlib
  from PIL import Image
  from embodied.core import Checkpoint
  path = pathlib.Path(__file__).parent.parent / 'scripts' / 'dream.py'
  spec = importlib.util.spec_from_file_location('dream', path)
  tool = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(tool)

  logdir = tmp_path / 'run'
  config = dmain.parse(['--configs', 'debug', '--task', 'dummy_image',
                        '--logdir', str(logdir), '--dynamics.k_steps', '1'])
  dmain.write_config(config, logdir)
  replay = dmain.make_replay(config, 'replay')
  for t in range(30):
    image = np.zeros((4, 4, 1), np.uint8)
    image[1, 2, 0] = 200 * (t % 2)  # Blinks every step: always moving.
    replay.add({'image': image, 'is_first': t == 0, 'reward': 0.0,
                'is_last': False, 'is_terminal': False, 'action': 0})
  checkpoint = Checkpoint(logdir / 'ckpt')
  checkpoint.register('replay', replay)
  checkpoint.save(30)
  files = sorted(p.relative_to(logdir) for p in logdir.rglob('*'))
  out = tmp_path / 'out'
  assert tool.main(['--logdir', str(logdir), '--masks', '--sequences', '1',
                    '--length', '5', '--scale', '1', '--out', str(out)]) == 0
  # Looking at a run changes nothing in it.
  assert sorted(p.relative_to(logdir) for p in logdir.rglob('*')) == files
  picture = np.asarray(Image.open(str(out / 'mask_strip_image.png')))
  # Rows frame / mask of 4 + 2 pixels, columns 5 frames of 4 + 2 pixels.
  assert picture.shape == (2 * 6, 5 * 6, 3)
  mask = picture[6:10, 0:4, 0]
  want = np.zeros((4, 4), np.uint8)
  want[1, 2] = 255
  np.testing.assert_array_equal(mask, want)
