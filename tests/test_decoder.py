"""The image decoder and the network sizes against the reference DreamerV3."""

import elements
import ninjax as nj
import numpy as np

from dreamerv3 import main as dmain
from dreamerv3 import rssm
from dreamerv3.agent import Dreamer
from tests.helpers import fill_params, train_shapes, zeros_batch

# Parameters per network of the reference DreamerV3 (commit e3f0224) at
# `--configs atari100k size12m` on Pong (64x64 RGB, 6 actions).
REFERENCE_ATARI100K_SIZE12M = {
    'con': 656129, 'dec': 1272003, 'dyn': 5979648, 'enc': 220416,
    'pol': 789510, 'rew': 721407, 'val': 853503}


def image_spaces(size, actions):
  obs_space = {
      'image': elements.Space(np.uint8, (*size, 3)),
      'reward': elements.Space(np.float32),
      'is_first': elements.Space(bool),
      'is_last': elements.Space(bool),
      'is_terminal': elements.Space(bool)}
  act_space = {'action': elements.Space(np.int32, (), 0, actions)}
  return obs_space, act_space


def test_param_counts_equal_the_reference_at_atari100k_size12m():
  config = dmain.parse(['--configs', 'atari100k', 'size12m'])
  aconfig = dmain.agent_config(config)
  obs_space, act_space = image_spaces(config.env.size, 6)
  model = Dreamer(obs_space, act_space, aconfig, name='agent')
  shapes = train_shapes(model, zeros_batch(model, batch=1))
  counts = {}
  for key, shape in shapes.items():
    net = key.split('/')[1]
    counts[net] = counts.get(net, 0) + int(np.prod(shape.shape))
  got = {k: counts[k] for k in REFERENCE_ATARI100K_SIZE12M}
  assert got == REFERENCE_ATARI100K_SIZE12M


def rms(x, scale, eps=1e-4):
  return x / np.sqrt((x * x).mean(-1, keepdims=True) + eps) * scale


def silu(x):
  return x / (1 + np.exp(-x))


def test_first_feature_map_is_the_reference_formula():
  """The decoder's first feature map on fixed weights against the
  reference's formula written out in NumPy: block g of the deterministic
  state maps through its own kernel to h*w*(c/g) values, which fill channels
  [g*c/g, (g+1)*c/g) of every pixel; the flat stochastic state goes through
  Linear(2 units), RMSNorm, SiLU, Linear(h*w*c); the sum goes through
  RMSNorm and SiLU."""
  deter, stoch, units, blocks = 16, 8, 6, 4
  h, w, c = 2, 3, 8
  obs_space, _ = image_spaces((8, 12), 2)
  dec = rssm.Decoder(obs_space, deter, units=units, bspace=blocks,
                     depth=4, mults=(2, 2), name='dec')
  rng = np.random.default_rng(0)
  feat = rng.normal(size=(5, deter + stoch)).astype(np.float32)
  fn = lambda x: dec.spatial(x, (h, w, c))
  params = fill_params(fn, feat)
  _, got = nj.pure(fn)(params, feat, seed=np.uint32([0, 0]))
  p = {k.split('/', 1)[1]: np.asarray(v, np.float64)
       for k, v in params.items()}
  assert sorted(p) == [
      'deterin/bias', 'deterin/kernel', 'imginnorm/scale', 'stochin/bias',
      'stochin/kernel', 'stochinnorm/scale', 'stochout/bias',
      'stochout/kernel']
  f = feat.astype(np.float64)
  n, di, ch = len(f), deter // blocks, c // blocks
  x0 = np.zeros((n, h, w, c))
  for g in range(blocks):
    part = f[:, g * di:(g + 1) * di] @ p['deterin/kernel'][g]
    part += p['deterin/bias'][g * h * w * ch:(g + 1) * h * w * ch]
    x0[..., g * ch:(g + 1) * ch] = part.reshape((n, h, w, ch))
  x1 = f[:, deter:] @ p['stochin/kernel'] + p['stochin/bias']
  x1 = silu(rms(x1, p['stochinnorm/scale']))
  x1 = (x1 @ p['stochout/kernel'] + p['stochout/bias']).reshape((n, h, w, c))
  want = silu(rms(x0 + x1, p['imginnorm/scale']))
  assert got.shape == (n, h, w, c)
  np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
  # The wiring matters: the same weights with the deterministic blocks
  # written block after block over all channels give another map.
  wrong = x0.reshape(n, -1)
  wrong = np.concatenate([
      (f[:, g * di:(g + 1) * di] @ p['deterin/kernel'][g] +
       p['deterin/bias'][g * h * w * ch:(g + 1) * h * w * ch])
      for g in range(blocks)], -1).reshape((n, h, w, c))
  assert not np.allclose(got, silu(rms(wrong + x1, p['imginnorm/scale'])),
                         atol=1e-3)
