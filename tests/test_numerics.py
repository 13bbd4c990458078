"""Numeric building blocks checked against slow, obvious references."""

import math

import elements
import jax
import jax.numpy as jnp
import ninjax as nj
import numpy as np
import pytest

import embodied.jax.functional as fn
from embodied.jax import opt, outs
from dreamerv3 import rssm as rssm_lib
from dreamerv3.agent import Normalize
from tests.helpers import fill_params

sg = jax.lax.stop_gradient


def np_softmax(x):
  x = np.asarray(x, np.float64)
  e = np.exp(x - x.max(-1, keepdims=True))
  return e / e.sum(-1, keepdims=True)


def np_log_softmax(x):
  x = np.asarray(x, np.float64)
  m = x.max(-1, keepdims=True)
  return x - m - np.log(np.exp(x - m).sum(-1, keepdims=True))


# Symlog.


def test_symlog_closed_form():
  xs = [-1e3, -5.0, -1.0, -0.5, 0.0, 0.5, 1.0, 5.0, 1e3]
  got = np.asarray(fn.symlog(jnp.array(xs, jnp.float32)))
  want = [math.copysign(math.log1p(abs(x)), x) for x in xs]
  np.testing.assert_allclose(got, want, rtol=1e-6, atol=0)
  # Landmarks: symlog(e - 1) = 1, symexp(1) = e - 1, both odd.
  np.testing.assert_allclose(fn.symlog(jnp.float32(math.e - 1)), 1, rtol=1e-6)
  np.testing.assert_allclose(fn.symexp(jnp.float32(1)), math.e - 1, rtol=1e-6)
  np.testing.assert_allclose(fn.symexp(jnp.float32(-2)), -(math.e ** 2 - 1),
                             rtol=1e-6)
  assert float(fn.symlog(jnp.float32(0))) == 0.0
  assert float(fn.symexp(jnp.float32(0))) == 0.0


def test_symlog_symexp_inverse():
  x = np.array([-3e4, -100, -1.5, -1e-3, 0, 1e-3, 0.7, 42, 3e4], np.float32)
  np.testing.assert_allclose(fn.symexp(fn.symlog(x)), x, rtol=1e-5, atol=1e-7)
  y = np.linspace(-10, 10, 41).astype(np.float32)
  np.testing.assert_allclose(fn.symlog(fn.symexp(y)), y, rtol=1e-5, atol=1e-6)


# Two-hot encoding.


def twohot_ref(x, bins):
  """Loop reference: edge bins take everything outside the range."""
  n = len(bins)
  out = np.zeros(n)
  if x <= bins[0]:
    out[0] = 1
    return out
  if x >= bins[-1]:
    out[-1] = 1
    return out
  i = max(k for k in range(n) if bins[k] <= x)
  w = (x - bins[i]) / (bins[i + 1] - bins[i])
  out[i] += 1 - w
  out[i + 1] += w
  return out


def test_encode_twohot_in_range():
  bins = np.asarray(outs.twohot_bins(255, 'symlog'), np.float64)
  rng = np.random.default_rng(0)
  xs = np.concatenate([
      rng.uniform(-19.9, 19.9, 200),  # Random values.
      bins[[1, 50, 127, 200, 253]],  # Exactly on interior bins.
      (bins[10:12].mean(), bins[127:129].mean()),  # Midpoints.
      (bins[0], bins[-1])]).astype(np.float32)  # Range edges.
  got = np.asarray(outs.encode_twohot(jnp.asarray(xs), jnp.asarray(bins)))
  for x, row in zip(xs, got):
    np.testing.assert_allclose(row, twohot_ref(float(x), bins), atol=2e-6)
    nz = np.flatnonzero(row)
    assert len(nz) <= 2 and (len(nz) < 2 or nz[1] == nz[0] + 1), nz
  np.testing.assert_allclose(got.sum(-1), 1, atol=1e-6)
  # The expectation over bins recovers the input (up to float32 rounding).
  np.testing.assert_allclose(got @ bins, xs, rtol=0, atol=1e-5)


def test_encode_twohot_above_range_clips_to_last_bin():
  bins = outs.twohot_bins(255, 'symlog')
  got = np.asarray(outs.encode_twohot(jnp.array([20.0, 20.5, 1e6]), bins))
  want = np.zeros((3, 255))
  want[:, -1] = 1
  np.testing.assert_allclose(got, want)


def test_encode_twohot_below_range_clips_to_first_bin():
  bins = jnp.array([-1.0, 0.0, 1.0])
  got = np.asarray(outs.encode_twohot(jnp.array([-3.0, -1.5]), bins))
  # Actual: [[0.6, 0.4, 0], [0.75, 0.25, 0]].
  np.testing.assert_allclose(got, [[1, 0, 0], [1, 0, 0]])


# TwoHot output.


@pytest.mark.parametrize('num', [255, 63, 64, 7])
def test_twohot_bins_layout(num):
  for layout, squash in (('symexp', fn.symexp), ('symlog', lambda x: x)):
    bins = np.asarray(outs.twohot_bins(num, layout), np.float64)
    assert bins.shape == (num,)
    assert (np.diff(bins) > 0).all()
    np.testing.assert_array_equal(bins, -bins[::-1])  # Exactly mirrored.
    want = np.asarray(squash(jnp.linspace(-20.0, 20.0, num)), np.float64)
    np.testing.assert_allclose(bins, want, rtol=1e-5, atol=1e-6)
  assert num % 2 == 0 or outs.twohot_bins(num)[num // 2] == 0


@pytest.mark.parametrize('num', [255, 63])
def test_twohot_uniform_softmax_predicts_exactly_zero(num):
  logits = jnp.zeros((3, num))
  assert (np.asarray(outs.TwoHot(logits, outs.twohot_bins(num)).pred())
          == 0).all()


def test_twohot_pred_onehot_logits():
  bins = outs.twohot_bins(255)
  for i in (0, 17, 127, 200, 254):
    logits = jnp.zeros(255).at[i].set(1e4)
    got = float(outs.TwoHot(logits, bins).pred())
    np.testing.assert_allclose(got, bins[i], rtol=1e-5)


@pytest.mark.parametrize('layout', ['symexp', 'symlog'])
def test_twohot_pred_twohot_logits(layout):
  bins = outs.twohot_bins(255, layout)
  ys = jnp.array([3.7, -12.0, 0.0, 250.0, -0.01, 1e5], jnp.float32)
  enc = fn.symlog(ys) if layout == 'symlog' else ys
  probs = outs.encode_twohot(enc, bins)
  # softmax(log p) = p exactly where p > 0 (log 0 = -inf gives 0).
  logits = jnp.log(probs)
  got = np.asarray(outs.TwoHot(logits, bins, layout).pred())
  np.testing.assert_allclose(got, ys, rtol=2e-4, atol=1e-5)


@pytest.mark.parametrize('layout', ['symexp', 'symlog'])
def test_twohot_loss_is_cross_entropy(layout):
  bins = np.asarray(outs.twohot_bins(15, layout, 5.0), np.float64)
  rng = np.random.default_rng(1)
  logits = rng.normal(0, 2, (4, 15)).astype(np.float32)
  target = np.array([0.3, -20.0, 7.5, 0.0], np.float32)
  got = np.asarray(
      outs.TwoHot(jnp.asarray(logits), bins, layout).loss(target))
  for b in range(4):
    x = float(target[b])
    if layout == 'symlog':
      x = math.copysign(math.log1p(abs(x)), x)
    want = -(twohot_ref(x, bins) * np_log_softmax(logits[b])).sum()
    np.testing.assert_allclose(got[b], want, rtol=1e-5)


def twohot_optimum_pred(values, probs, layout, num=255, steps=3000):
  """pred() at the minimum of the expected loss over a target mixture,
  found by gradient descent on the logits directly."""
  bins = outs.twohot_bins(num, layout)
  values = jnp.asarray(values, jnp.float32)
  probs = jnp.asarray(probs, jnp.float32)
  expected = lambda lg: (probs * outs.TwoHot(
      jnp.broadcast_to(lg, (len(values), num)), bins, layout).loss(
          values)).sum()
  grad = jax.jit(jax.grad(expected))

  def body(_, state):  # Adam: the loss surface is flat far from the target.
    lg, m, v, t = state
    g = grad(lg)
    m, v, t = 0.9 * m + 0.1 * g, 0.999 * v + 0.001 * g * g, t + 1
    mh, vh = m / (1 - 0.9 ** t), v / (1 - 0.999 ** t)
    return lg - 0.1 * mh / (jnp.sqrt(vh) + 1e-8), m, v, t
  zero = jnp.zeros(num)
  lg, *_ = jax.lax.fori_loop(0, steps, body, (zero, zero, zero, 0.0))
  return float(outs.TwoHot(lg, bins, layout).pred())


TWOHOT_MIXTURES = {
    'sparse': ([0.0, 100.0], [0.9, 0.1]),        # mean 10
    'bimodal': ([0.0, 10.0], [0.5, 0.5]),        # mean 5
    'negative': ([-3.0, -250.0, 40.0], [0.5, 0.3, 0.2]),
    'wide': ([0.5, 2e3, 7.0, -1.0], [0.4, 0.1, 0.3, 0.2]),
    # Beyond the outer bins (+-symexp(20) = 4.85e8): counted as the edge.
    'beyond': ([1e9, 10.0], [0.5, 0.5]),
}


@pytest.mark.parametrize('name', sorted(TWOHOT_MIXTURES))
def test_twohot_optimum_predicts_the_mixture_mean(name):
  values, probs = TWOHOT_MIXTURES[name]
  edge = float(fn.symexp(jnp.float32(20.0)))
  clipped = np.clip(values, -edge, edge)
  mean = float(np.dot(probs, clipped))
  got = twohot_optimum_pred(values, probs, 'symexp')
  np.testing.assert_allclose(got, mean, rtol=0.01, atol=0.05)


def test_twohot_symlog_layout_is_biased_below_the_mean():
  # The earlier encoding: for 0 w.p. 0.9 and 100 w.p. 0.1 (mean 10) its
  # optimum predicts symexp(0.1 * symlog(100)) ~ 0.59.
  got = twohot_optimum_pred(*TWOHOT_MIXTURES['sparse'], 'symlog')
  np.testing.assert_allclose(got, math.expm1(0.1 * math.log1p(100)),
                             rtol=0.02)
  assert got < 1.0


# Lambda returns.


def lambda_return_ref(rew, val, cont, disc, lam):
  B, T = rew.shape
  lam = np.broadcast_to(lam, rew.shape)
  out = np.zeros((B, T))
  for b in range(B):
    nxt = val[b, T]
    for t in reversed(range(T)):
      ret = rew[b, t] + disc * cont[b, t] * (
          (1 - lam[b, t]) * val[b, t + 1] + lam[b, t] * nxt)
      out[b, t] = ret
      nxt = ret
  return out


@pytest.mark.parametrize('lam_kind', ['scalar', 'array', 'zero', 'one'])
def test_lambda_return_vs_loop(lam_kind):
  rng = np.random.default_rng(2)
  B, T = 3, 7
  rew = rng.normal(size=(B, T)).astype(np.float32)
  val = rng.normal(size=(B, T + 1)).astype(np.float32)
  cont = rng.choice([0.0, 1.0, 0.5], (B, T), p=[0.2, 0.6, 0.2]).astype(
      np.float32)
  lam = {
      'scalar': 0.9,
      'array': (rng.uniform(size=(B, T)) * (rng.uniform(size=(B, T)) > 0.3)
                ).astype(np.float32),
      'zero': 0.0, 'one': 1.0}[lam_kind]
  got = np.asarray(fn.lambda_return(
      jnp.asarray(rew), jnp.asarray(val), jnp.asarray(cont), 0.97,
      jnp.asarray(lam) if lam_kind == 'array' else lam))
  want = lambda_return_ref(rew, val, cont, 0.97, lam)
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
  if lam_kind == 'zero':  # One-step TD targets.
    np.testing.assert_allclose(
        got, rew + 0.97 * cont * val[:, 1:], rtol=1e-5, atol=1e-6)


def test_continue_head_with_fixed_discount_equals_reference_contdisc():
  """Ours: the continue head predicts p = P(not terminal), returns use the
  discount g. Reference (contdisc): the head's target is g * (1 -
  is_terminal), so it predicts g * p, and returns use discount 1. Returns
  are equal; the imagination weights differ by the constant factor g."""
  rng = np.random.default_rng(21)
  B, H, g, lam = 4, 9, 1 - 1 / 333, 0.95
  rew = rng.normal(size=(B, H + 1)).astype(np.float32)
  val = rng.normal(size=(B, H + 1)).astype(np.float32)
  p = rng.uniform(0.5, 1.0, (B, H + 1)).astype(np.float32)
  # Ours, as in Dreamer._imagination_loss.
  ret = np.asarray(fn.lambda_return(
      jnp.asarray(rew[:, 1:]), jnp.asarray(val), jnp.asarray(p[:, 1:]), g,
      lam))
  weight = np.cumprod(g * p, 1) / g
  # The reference's formulas, written as loops over time.
  con = g * p.astype(np.float64)
  want = np.zeros((B, H))
  for b in range(B):
    nxt = val[b, -1]
    for t in reversed(range(H)):
      live, cont = con[b, t + 1], lam
      nxt = rew[b, t + 1] + live * ((1 - cont) * val[b, t + 1] + cont * nxt)
      want[b, t] = nxt
  ref_weight = np.ones((B, H + 1))
  for t in range(H + 1):
    ref_weight[:, t] = np.prod(con[:, :t + 1], 1)
  np.testing.assert_allclose(ret, want, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(ref_weight, g * weight, rtol=1e-6)


def test_laprop_cancels_a_constant_loss_scale():
  # Why the constant factor between the two weightings does not matter:
  # LaProp's update is invariant to scaling every gradient by a constant.
  rng = np.random.default_rng(22)
  params = _tree(rng)
  grads = [_tree(rng) for _ in range(3)]
  tx = opt.make_optax(lr=0.1, agc=0.0, warmup=0)
  s1, s2 = tx.init(params), tx.init(params)
  for t in range(3):
    u1, s1 = tx.update(grads[t], s1, params)
    scaled = {k: v * (1 - 1 / 333) for k, v in grads[t].items()}
    u2, s2 = tx.update(scaled, s2, params)
    for k in params:
      np.testing.assert_allclose(u1[k], u2[k], rtol=1e-5, atol=1e-8)


# Categorical helpers.


def test_unimix_probs_formula():
  rng = np.random.default_rng(3)
  logits = rng.normal(0, 3, (2, 5, 6)).astype(np.float32)
  for mix in (0.0, 0.01, 0.3):
    got = np.asarray(fn.unimix_probs(jnp.asarray(logits), mix))
    want = (1 - mix) * np_softmax(logits) + mix / 6
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(got.sum(-1), 1, atol=1e-6)
    assert got.min() >= mix / 6 * (1 - 1e-6)


def test_onehot_kl_and_entropy_vs_loop():
  rng = np.random.default_rng(4)
  B, L, K = 3, 4, 5
  a = rng.normal(0, 2, (B, L, K)).astype(np.float32)
  b = rng.normal(0, 2, (B, L, K)).astype(np.float32)
  mix = 0.01
  da = outs.OneHotST(jnp.asarray(a), mix)
  db = outs.OneHotST(jnp.asarray(b), mix)
  got_kl, got_ent = np.asarray(da.kl(db)), np.asarray(da.entropy())
  for i in range(B):
    kl = ent = 0.0
    for l in range(L):
      p = (1 - mix) * np_softmax(a[i, l]) + mix / K
      q = (1 - mix) * np_softmax(b[i, l]) + mix / K
      for k in range(K):
        kl += p[k] * math.log(p[k] / q[k])
        ent -= p[k] * math.log(p[k])
    np.testing.assert_allclose(got_kl[i], kl, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(got_ent[i], ent, rtol=1e-5)
  # KL of a distribution with itself is zero.
  np.testing.assert_allclose(da.kl(da), 0, atol=1e-6)


def test_free_nats_kl():
  kl = jnp.array([0.0, 0.5, 1.0, 1.5, 7.0])
  np.testing.assert_array_equal(
      fn.free_nats_kl(kl, 1.0), [1.0, 1.0, 1.0, 1.5, 7.0])
  np.testing.assert_array_equal(fn.free_nats_kl(kl, 0.0), kl)
  # The clipped region has zero gradient, the rest passes gradients through.
  grad = jax.grad(lambda x: fn.free_nats_kl(x, 1.0).sum())(
      jnp.array([0.2, 3.0]))
  np.testing.assert_array_equal(grad, [0.0, 1.0])


# KL balancing in the RSSM.


def kl_ref(post_logit, prior_logit, mix=0.01):
  """KL(post || prior) summed over latents, by hand with unimix."""
  p = (1 - mix) * jax.nn.softmax(post_logit, -1) + mix / post_logit.shape[-1]
  q = (1 - mix) * jax.nn.softmax(prior_logit, -1) + mix / post_logit.shape[-1]
  return (p * (jnp.log(p) - jnp.log(q))).sum((-2, -1))


def rssm_kl_analysis(free_nats):
  """RSSM.losses on random entries, the gradients of dyn and rep with respect
  to deter (reaches the prior net) and the posterior logits, and hand-made
  references, all in one jit (eager grads compile op by op: slow)."""
  space = {'action': elements.Space(np.int32, (), 0, 3)}
  model = rssm_lib.RSSM(
      space, deter=8, hidden=8, stoch=3, classes=4, blocks=2,
      free_nats=free_nats, name='rssm')
  rng = np.random.default_rng(5)
  deter = jnp.asarray(rng.normal(size=(2, 3, 8)), jnp.float32)
  logit = jnp.asarray(rng.normal(0, 2, (2, 3, 3, 4)), jnp.float32)
  state = fill_params(model.losses, {'deter': deter, 'logit': logit})

  @jax.jit
  def analyze(deter, logit):
    losses = lambda d, l: nj.pure(model.losses)(
        state, {'deter': d, 'logit': l})[1]
    prior = lambda d: nj.pure(model._prior)(state, d)[1]
    out = losses(deter, logit)
    total = lambda key: lambda d, l: losses(d, l)[key].sum()
    grads = {k: jax.grad(total(k), (0, 1))(deter, logit)
             for k in ('dyn', 'rep')}
    prior_logit = prior(deter)
    # rep: d KL(post || sg prior) / d post. dyn: chain rule through the
    # prior net with the posterior held fixed.
    rep_l = jax.grad(lambda l: kl_ref(l, prior_logit).sum())(logit)
    dkl = jax.grad(lambda q: kl_ref(logit, q).sum())(prior_logit)
    dyn_d = jax.vjp(prior, deter)[1](dkl)[0]
    ref = {'raw': kl_ref(logit, prior_logit), 'rep_l': rep_l, 'dyn_d': dyn_d}
    return out, grads, ref
  return analyze(deter, logit)


def test_rssm_kl_balancing_gradients():
  out, grads, ref = rssm_kl_analysis(0.0)
  np.testing.assert_allclose(out['dyn_raw'], ref['raw'], rtol=1e-5)
  np.testing.assert_allclose(out['rep_raw'], ref['raw'], rtol=1e-5)
  # free_nats 0 disables clipping.
  np.testing.assert_array_equal(out['dyn'], out['dyn_raw'])
  np.testing.assert_array_equal(out['rep'], out['rep_raw'])
  (dyn_d, dyn_l), (rep_d, rep_l) = grads['dyn'], grads['rep']
  # dyn reaches only the prior (through deter), rep only the posterior logits.
  np.testing.assert_array_equal(dyn_l, 0)
  np.testing.assert_array_equal(rep_d, 0)
  assert np.abs(dyn_d).sum(-1).min() > 0 and np.abs(rep_l).max() > 0
  np.testing.assert_allclose(rep_l, ref['rep_l'], rtol=1e-4, atol=1e-6)
  np.testing.assert_allclose(dyn_d, ref['dyn_d'], rtol=1e-4, atol=1e-6)


def test_rssm_kl_free_nats_clip():
  raw = np.asarray(rssm_kl_analysis(0.0)[0]['rep_raw'])
  free = float(np.median(raw))  # About half the steps get clipped.
  out, grads, _ = rssm_kl_analysis(free)
  np.testing.assert_allclose(out['dyn'], np.maximum(raw, free), rtol=1e-6)
  np.testing.assert_allclose(out['rep'], np.maximum(raw, free), rtol=1e-6)
  below = raw < free
  assert below.any() and (~below).any()
  # Steps below the free nats get no gradient; the others do.
  per_step = np.abs(np.asarray(grads['rep'][1])).sum((-2, -1))
  np.testing.assert_array_equal(per_step[below], 0)
  assert (per_step[~below] > 0).all()
  per_step = np.abs(np.asarray(grads['dyn'][0])).sum(-1)
  np.testing.assert_array_equal(per_step[below], 0)
  assert (per_step[~below] > 0).all()
  # Everything clipped: constant losses, zero gradients.
  out, grads, _ = rssm_kl_analysis(100.0)
  np.testing.assert_array_equal(out['dyn'], 100.0)
  np.testing.assert_array_equal(out['rep'], 100.0)
  for g in jax.tree.leaves(grads):
    np.testing.assert_array_equal(g, 0)


# Sampling.

# 99.9% quantiles of chi-square with 1..4 degrees of freedom.
CHI2_999 = {1: 10.83, 2: 13.82, 3: 16.27, 4: 18.47}


def chi2(counts, probs):
  n = counts.sum()
  mask = probs > 0
  exp = n * probs[mask]
  return (((counts[mask] - exp) ** 2) / exp).sum(), mask.sum() - 1


def test_sample_onehot_frequencies():
  probs = np.array([0.1, 0.2, 0.0, 0.3, 0.4], np.float32)
  n = 20000
  hard = np.asarray(outs.sample_onehot(
      jax.random.PRNGKey(0), jnp.broadcast_to(probs, (n, 5))))
  assert set(np.unique(hard)) <= {0.0, 1.0}
  np.testing.assert_array_equal(hard.sum(-1), 1)
  counts = hard.sum(0)
  assert counts[2] == 0  # Zero-probability class never drawn.
  stat, dof = chi2(counts, probs)
  assert stat < CHI2_999[dof], (stat, counts)


def test_sample_onehot_unnormalized_and_batched():
  # Different distributions per row; cdf[-1] need not be 1.
  probs = np.array([[2.0, 0.0, 2.0], [0.0, 0.0, 5.0], [1.0, 3.0, 0.0]],
                   np.float32)
  n = 6000
  hard = np.asarray(outs.sample_onehot(
      jax.random.PRNGKey(1), jnp.broadcast_to(probs, (n, 3, 3))))
  np.testing.assert_array_equal(hard.sum(-1), 1)
  counts = hard.sum(0)
  np.testing.assert_array_equal(counts[1], [0, 0, n])
  for row in (0, 2):
    stat, dof = chi2(counts[row], probs[row] / probs[row].sum())
    assert stat < CHI2_999[dof], (row, stat, counts[row])


def test_sample_onehot_zero_uniform_draw():
  # PRNGKey(46) draws u == 0.0 at row 9926 of a (2^20, 1) uniform sample.
  n = 2 ** 20
  u = jax.random.uniform(jax.random.PRNGKey(46), (n, 1), jnp.float32)
  assert float(u[9926, 0]) == 0.0
  probs = jnp.broadcast_to(jnp.array([0.5, 0.5], jnp.float32), (n, 2))
  hard = np.asarray(outs.sample_onehot(jax.random.PRNGKey(46), probs))
  np.testing.assert_array_equal(hard[9926], [1, 0])


def test_categorical_sample_frequencies():
  probs = np.array([0.5, 0.25, 0.125, 0.125], np.float32)
  n = 20000
  logits = jnp.broadcast_to(jnp.log(probs), (n, 4))
  dist = outs.Categorical(logits, unimix=0.0)
  idx = np.asarray(dist.sample(jax.random.PRNGKey(2)))
  assert idx.dtype == np.int32 and idx.shape == (n,)
  assert idx.min() >= 0 and idx.max() <= 3
  counts = np.bincount(idx, minlength=4)
  stat, dof = chi2(counts, probs)
  assert stat < CHI2_999[dof], (stat, counts)
  # logp and entropy against the formulas.
  small = outs.Categorical(jnp.log(probs), unimix=0.0)
  np.testing.assert_allclose(small.logp(jnp.array(3)), np.log(probs[3]),
                             rtol=1e-5)
  np.testing.assert_allclose(
      small.entropy(), -(probs * np.log(probs)).sum(), rtol=1e-5)
  # Unimix shifts the frequencies toward uniform.
  mixed = outs.Categorical(logits, unimix=0.5)
  idx = np.asarray(mixed.sample(jax.random.PRNGKey(3)))
  stat, dof = chi2(np.bincount(idx, minlength=4), 0.5 * probs + 0.5 / 4)
  assert stat < CHI2_999[dof]


def test_onehot_st_sample_straight_through():
  logits = jnp.array([[[0.3, -1.0, 2.0], [0.0, 0.0, 0.0]]])
  dist = outs.OneHotST(logits, 0.01)
  sample = dist.sample(jax.random.PRNGKey(0))
  np.testing.assert_allclose(sample.sum(-1), 1, atol=1e-6)
  np.testing.assert_allclose(np.round(sample), sample, atol=1e-6)
  # Gradient flows as if the sample were the probabilities.
  r = jnp.arange(6.0).reshape(1, 2, 3)
  g1 = jax.jit(jax.grad(lambda l: (outs.OneHotST(l, 0.01).sample(
      jax.random.PRNGKey(0)) * r).sum()))(logits)
  g2 = jax.jit(jax.grad(
      lambda l: (outs.OneHotST(l, 0.01).probs * r).sum()))(logits)
  np.testing.assert_allclose(g1, g2, rtol=1e-6)


# Return normalisation.


def test_normalize_percentile_ema():
  norm = Normalize(rate=0.1, limit=1.0, perclo=0.05, perchi=0.95, name='norm')
  rng = np.random.default_rng(6)
  xs = [rng.normal(0, 10, (4, 6)), rng.uniform(-30, 5, (4, 6)),
        rng.normal(3, 20, (4, 6))]
  state, lo, hi = {}, 0.0, 0.0
  for i, x in enumerate(xs):
    state, scale = nj.pure(norm)(state, jnp.asarray(x, jnp.float32),
                                 create=(i == 0))
    lo = 0.9 * lo + 0.1 * np.percentile(x.astype(np.float32), 5)
    hi = 0.9 * hi + 0.1 * np.percentile(x.astype(np.float32), 95)
    np.testing.assert_allclose(state['norm/lo'], lo, rtol=1e-5)
    np.testing.assert_allclose(state['norm/hi'], hi, rtol=1e-5)
    np.testing.assert_allclose(scale, max(1.0, hi - lo), rtol=1e-5)
  assert hi - lo > 1.0  # The scale above was not just the floor.
  # update=False reads without changing the statistics.
  new, scale = nj.pure(norm)(state, jnp.zeros((4, 6)), False)
  for key in ('norm/lo', 'norm/hi'):
    assert new[key] == state[key]
  np.testing.assert_allclose(scale, hi - lo, rtol=1e-5)


def test_normalize_floor_at_limit():
  norm = Normalize(rate=0.5, limit=2.0, name='norm')
  state, scale = nj.pure(norm)({}, jnp.linspace(-0.1, 0.1, 50), create=True)
  assert float(scale) == 2.0
  assert 0 < float(state['norm/hi'] - state['norm/lo']) < 2.0


# Continuous action head.


def test_bounded_normal_logp_closed_form():
  rng = np.random.default_rng(7)
  mean = rng.normal(0, 2, (3, 4)).astype(np.float32)
  std = rng.normal(0, 2, (3, 4)).astype(np.float32)
  x = rng.uniform(-1, 1, (3, 4)).astype(np.float32)
  dist = outs.BoundedNormal(jnp.asarray(mean), jnp.asarray(std), 0.1, 1.0)
  got, ent = np.asarray(dist.logp(jnp.asarray(x))), np.asarray(dist.entropy())
  for b in range(3):
    lp = h = 0.0
    for i in range(4):
      mu = math.tanh(mean[b, i])
      sd = 0.9 / (1 + math.exp(-(std[b, i] + 2))) + 0.1
      lp += -0.5 * ((x[b, i] - mu) / sd) ** 2 - math.log(sd * math.sqrt(
          2 * math.pi))
      h += 0.5 * math.log(2 * math.pi * math.e * sd * sd)
    np.testing.assert_allclose(got[b], lp, rtol=1e-5)
    np.testing.assert_allclose(ent[b], h, rtol=1e-5)
  np.testing.assert_allclose(dist.loss(jnp.asarray(x)), -got)
  np.testing.assert_allclose(dist.pred(), np.tanh(mean), rtol=1e-6)


def test_bounded_normal_samples_are_unclipped_normal():
  dist = outs.BoundedNormal(jnp.full((200000, 1), math.atanh(0.9)),
                            jnp.full((200000, 1), 2.0))
  sd = 0.9 / (1 + math.exp(-4.0)) + 0.1
  x = np.asarray(dist.sample(jax.random.PRNGKey(0)))[:, 0]
  assert (x > 1).mean() > 0.4  # About half lie beyond the bound of 1.
  np.testing.assert_allclose(x.mean(), 0.9, atol=4 * sd / math.sqrt(len(x)))
  np.testing.assert_allclose(x.std(), sd, rtol=0.01)


def _score_function(clip, n=100000):
  """Monte Carlo E[d logp(a) / d(mean, std params)] at tanh(mean) = 0.9,
  with a ~ the head's sample (clipped to [-1, 1] first if clip): returns
  the mean and its standard error per parameter."""
  params = jnp.array([math.atanh(0.9), 0.0])

  def logp(p, seed):
    dist = outs.BoundedNormal(p[:1], p[1:])
    a = sg(dist.sample(seed))
    return dist.logp(jnp.clip(a, -1, 1) if clip else a)
  seeds = jax.random.split(jax.random.PRNGKey(3), n)
  grads = np.asarray(jax.jit(jax.vmap(jax.grad(logp), (None, 0)))(
      params, seeds), np.float64)
  return grads.mean(0), grads.std(0) / math.sqrt(n)


def test_bounded_normal_score_function_has_zero_mean():
  mean, err = _score_function(clip=False)
  assert (np.abs(mean) < 4 * err).all(), (mean, err)
  # Evaluated at the clipped sample (the earlier head), it is biased.
  mean, err = _score_function(clip=True)
  assert (np.abs(mean) > 10 * err).any(), (mean, err)


def test_binary_logp():
  logit = jnp.array([-3.0, 0.0, 2.5])
  x = jnp.array([1.0, 0.0, 0.0])
  p = 1 / (1 + np.exp(-np.asarray(logit, np.float64)))
  want = np.log(np.where(np.asarray(x) > 0, p, 1 - p))
  np.testing.assert_allclose(outs.Binary(logit).logp(x), want, rtol=1e-5)


# Optimizer pieces.


def _tree(rng):
  return {'a': rng.normal(size=(3,)).astype(np.float32),
          'b': rng.normal(size=(2, 2)).astype(np.float32)}


def laprop_ref(grads, beta1, beta2, eps):
  """NumPy LaProp: RMS-normalise, then momentum, both bias-corrected."""
  mom = {k: np.zeros_like(v, np.float64) for k, v in grads[0].items()}
  nu = {k: np.zeros_like(v, np.float64) for k, v in grads[0].items()}
  outs_ = []
  for t, g in enumerate(grads, 1):
    out = {}
    for k in g:
      nu[k] = beta2 * nu[k] + (1 - beta2) * g[k].astype(np.float64) ** 2
      normed = g[k] / (np.sqrt(nu[k] / (1 - beta2 ** t)) + eps)
      mom[k] = beta1 * mom[k] + (1 - beta1) * normed
      out[k] = mom[k] / (1 - beta1 ** t)
    outs_.append(out)
  return outs_


def test_laprop_three_steps():
  rng = np.random.default_rng(8)
  params = _tree(rng)
  grads = [_tree(rng) for _ in range(3)]
  for b1, b2, eps in ((0.9, 0.999, 1e-20), (0.5, 0.9, 1e-3)):
    tx = opt.scale_by_laprop(b1, b2, eps)
    state = tx.init(params)
    want = laprop_ref(grads, b1, b2, eps)
    for t in range(3):
      upd, state = tx.update(grads[t], state, params)
      for k in params:
        # float32 bias corrections differ from float64 at ~1e-5.
        np.testing.assert_allclose(upd[k], want[t][k], rtol=1e-4, atol=1e-7)
    assert int(state['step']) == 3
  # First step with tiny eps: the update is the sign of the gradient.
  tx = opt.scale_by_laprop()
  upd, _ = tx.update(grads[0], tx.init(params), params)
  for k in params:
    np.testing.assert_allclose(upd[k], np.sign(grads[0][k]), rtol=1e-5)


def agc_ref(g, p, clip, pmin):
  limit = clip * max(pmin, np.linalg.norm(p.reshape(-1)))
  gnorm = np.linalg.norm(g.reshape(-1))
  return g * (limit / gnorm if gnorm > limit else 1.0)


def test_clip_by_agc():
  rng = np.random.default_rng(9)
  params = {'big': rng.normal(size=(4, 3)).astype(np.float32) * 5,
            'small': rng.normal(size=(5,)).astype(np.float32),
            'zero': np.zeros((3,), np.float32)}
  grads = {'big': rng.normal(size=(4, 3)).astype(np.float32) * 0.1,  # Kept.
           'small': rng.normal(size=(5,)).astype(np.float32) * 10,  # Clipped.
           'zero': np.full((3,), 1.0, np.float32)}  # Clipped at pmin.
  tx = opt.clip_by_agc(0.3, 1e-3)
  got, _ = tx.update(grads, tx.init(params), params)
  for k in params:
    want = agc_ref(grads[k], params[k], 0.3, 1e-3)
    np.testing.assert_allclose(got[k], want, rtol=1e-5, atol=1e-8)
  np.testing.assert_array_equal(got['big'], grads['big'])
  np.testing.assert_allclose(
      np.linalg.norm(got['small']), 0.3 * np.linalg.norm(params['small']),
      rtol=1e-5)
  np.testing.assert_allclose(np.linalg.norm(got['zero']), 0.3e-3, rtol=1e-5)


def test_make_optax_warmup_chain():
  # agc -> laprop -> -lr * count / warmup, with count starting at 0.
  rng = np.random.default_rng(10)
  params = _tree(rng)
  grads = [_tree(rng) for _ in range(3)]
  tx = opt.make_optax(lr=0.1, agc=0.0, warmup=4)
  state = tx.init(params)
  want = laprop_ref(grads, 0.9, 0.999, 1e-20)
  for t in range(3):
    upd, state = tx.update(grads[t], state, params)
    for k in params:
      np.testing.assert_allclose(
          upd[k], -0.1 * t / 4 * want[t][k], rtol=1e-4, atol=1e-8)
