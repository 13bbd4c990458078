"""The DreamerV2 seeds' model features for binary observations: a
Bernoulli image likelihood and a posterior entropy bonus, each checked
against a NumPy reference, and both off by default."""

import jax
import jax.numpy as jnp
import ninjax as nj
import numpy as np

from dreamerv3 import main
from dreamerv3.agent import Dreamer
from embodied.jax import outs
from tests.helpers import fill_params, model_spaces, zeros_batch


def test_bernoulli_loss_is_binary_cross_entropy():
  rng = np.random.default_rng(0)
  logit = rng.normal(0, 2, (2, 3, 4, 5)).astype(np.float32)
  image = (rng.uniform(size=(2, 3, 4, 5)) < 0.3).astype(np.uint8) * 255
  weights = rng.uniform(0.5, 5, (2, 3, 4, 5)).astype(np.float32)
  dist = outs.Bernoulli(jnp.asarray(logit), 3, squash=lambda t: t / 255.0)
  got = np.asarray(dist.loss(jnp.asarray(image), jnp.asarray(weights)))
  plain = np.asarray(dist.loss(jnp.asarray(image)))
  for b in range(2):
    want = want_plain = 0.0
    for idx in np.ndindex(3, 4, 5):
      p = 1 / (1 + np.exp(-float(logit[(b, *idx)])))
      t = image[(b, *idx)] / 255
      nll = -(t * np.log(p) + (1 - t) * np.log(1 - p))
      want += weights[(b, *idx)] * nll
      want_plain += nll
    np.testing.assert_allclose(got[b], want, rtol=1e-5)
    np.testing.assert_allclose(plain[b], want_plain, rtol=1e-5)
  np.testing.assert_allclose(dist.pred(), 1 / (1 + np.exp(-logit)), rtol=1e-6)


def _loss_fn(argv):
  config = main.parse(['--configs', 'debug', '--task', 'dummy_image'] + argv)
  obs_space, act_space = model_spaces(config)
  model = Dreamer(obs_space, act_space, main.agent_config(config),
                  name='agent')
  rng = np.random.default_rng(1)
  data = zeros_batch(model)
  data['image'] = (rng.uniform(size=data['image'].shape) < 0.2).astype(
      np.uint8) * 255
  data['is_first'][:, 0] = True
  state = fill_params(model.loss, data)
  seed = np.uint32([3, 4])
  loss = jax.jit(lambda s, d: nj.pure(model.loss)(s, d, seed=seed)[1])
  observe = jax.jit(lambda s, d: nj.pure(model._observe)(s, d, seed=seed)[1])
  return model, state, data, loss, observe


def test_entropy_bonus_and_bernoulli_decoder():
  model, state, data, loss, observe = _loss_fn([])
  total0, (_, metrics0) = loss(state, data)
  # Off by default: its term is there (every scale has a term) at scale 0.
  assert np.isfinite(metrics0['loss/post_ent'])
  # The bonus: scale x negative posterior entropy, from the logits in NumPy.
  _, _, _, loss_s, _ = _loss_fn(
      ['--agent.loss_scales.post_ent', '0.5'])
  total, (_, metrics) = loss_s(state, data)
  _, entries = observe(state, data)
  logits = np.asarray(entries['logit'], np.float64)
  probs = np.exp(logits - logits.max(-1, keepdims=True))
  probs /= probs.sum(-1, keepdims=True)
  unimix = model.dyn.unimix
  probs = (1 - unimix) * probs + unimix / probs.shape[-1]
  entropy = -(probs * np.log(probs)).sum((-2, -1)).mean()
  np.testing.assert_allclose(metrics['loss/post_ent'], -entropy, rtol=1e-4)
  np.testing.assert_allclose(total - total0, -0.5 * entropy, rtol=1e-3,
                             atol=1e-4)
  # The Bernoulli decoder: the image loss is the binary cross-entropy of
  # the same decoder output taken as logits (the mse decoder's sigmoid).
  def dec_mean(d):
    _, entries = model._observe(d)
    return model.dec(model.dyn.feat(entries))['image'].pred()
  mean = np.asarray(jax.jit(lambda s, d: nj.pure(dec_mean)(
      s, d, seed=np.uint32([3, 4]))[1])(state, data), np.float64)
  target = data['image'][:, model.config.replay_context:] / 255.0
  bce = -(target * np.log(mean) + (1 - target) * np.log(1 - mean))
  _, _, _, loss_b, _ = _loss_fn(['--agent.dec.image_dist', 'bernoulli'])
  _, (_, metrics_b) = loss_b(state, data)
  np.testing.assert_allclose(
      metrics_b['loss/rec_image'], bce.sum((-3, -2, -1)).mean(), rtol=1e-4)
