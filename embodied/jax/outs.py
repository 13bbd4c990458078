"""Output distributions. Each exposes pred() and loss(target) (a negative log
likelihood up to constants, summed over event dims); stochastic ones add
sample(seed), logp(x) and entropy(). All math in float32."""

import jax
import jax.numpy as jnp

from . import functional as fn

f32 = jnp.float32
sg = jax.lax.stop_gradient


class MSE:
  """Squared error, optionally in symlog space, with optional per-element
  weights (e.g. per-pixel weights for image losses)."""

  def __init__(self, mean, dims, squash=None):
    self.mean = mean.astype(f32)
    self.dims = dims  # Number of trailing event dims to sum over.
    self.squash = squash or (lambda x: x)

  def pred(self):
    return self.mean

  def loss(self, target, weights=None):
    err = (self.mean - self.squash(target.astype(f32))) ** 2
    if weights is not None:
      err = err * weights
    return err.sum(tuple(range(-self.dims, 0))) if self.dims else err


class SymlogMSE(MSE):

  def __init__(self, mean, dims):
    super().__init__(mean, dims, fn.symlog)

  def pred(self):
    return fn.symexp(self.mean)


class Bernoulli:
  """Independent Bernoulli variables given by logits, e.g. the pixels of a
  binary image; the loss is the binary cross-entropy summed over `dims`
  trailing event dims, with optional per-element weights. The target is
  mapped into [0, 1] by `squash`; pred() is the mean (the probability)."""

  def __init__(self, logit, dims, squash=None):
    self.logit = logit.astype(f32)
    self.dims = dims
    self.squash = squash or (lambda x: x)

  def pred(self):
    return jax.nn.sigmoid(self.logit)

  def loss(self, target, weights=None):
    t = sg(self.squash(target.astype(f32)))
    nll = -(t * jax.nn.log_sigmoid(self.logit) +
            (1 - t) * jax.nn.log_sigmoid(-self.logit))
    if weights is not None:
      nll = nll * weights
    return nll.sum(tuple(range(-self.dims, 0))) if self.dims else nll


class TwoHot:
  """Categorical over fixed bins that predicts the mean of its target.

  The bins are placed at symexp(linspace(-limit, limit)) (fine near zero,
  coarse for large magnitudes), the raw target is spread over its two
  neighbouring bins so that their weighted value equals it, and pred() is
  the expected bin value. At the optimum of the loss the probabilities
  reproduce the target distribution's two-hot mixture, so pred() is its
  mean (targets beyond the outer bins count as the outer bin).

  layout 'symlog' is the earlier encoding (bins uniform in symlog space,
  target symlog(y), prediction symexp(E[bin])), kept only so that runs
  trained with it resume with the meaning they were trained with: it
  predicts far below the mean for skewed targets.
  """

  def __init__(self, logits, bins, layout='symexp'):
    if layout not in TWOHOT_LAYOUTS:
      raise ValueError(
          f"Unknown two-hot layout '{layout}': choose from "
          f"{', '.join(TWOHOT_LAYOUTS)}")
    self.logits = logits.astype(f32)
    self.bins = jnp.asarray(bins, f32)
    self.layout = layout
    self.probs = jax.nn.softmax(self.logits)

  def pred(self):
    if self.layout == 'symlog':
      return fn.symexp(self.probs @ self.bins)
    return symmetric_mean(self.probs, self.bins)

  def loss(self, target):
    target = sg(target.astype(f32))
    if self.layout == 'symlog':
      target = fn.symlog(target)
    return -(encode_twohot(target, self.bins) *
             jax.nn.log_softmax(self.logits)).sum(-1)


TWOHOT_LAYOUTS = ('symexp', 'symlog')


def twohot_bins(num=255, layout='symexp', limit=20.0):
  """Bin values for TwoHot: symmetric around an exact zero (odd num) so a
  uniform softmax predicts exactly 0."""
  half = jnp.linspace(-limit, limit, num, dtype=f32)[:num // 2]
  if layout == 'symexp':
    half = fn.symexp(half)
  middle = jnp.zeros(num % 2, f32)
  return jnp.concatenate([half, middle, -half[::-1]])


def symmetric_mean(probs, bins):
  """probs @ bins, summed from both ends towards the middle so that the
  terms of mirrored bins cancel exactly (a left-to-right sum over bins up
  to ~5e8 leaves a rounding error far above zero for a uniform softmax)."""
  n = bins.shape[0]
  m = n // 2
  terms = probs * bins
  outer = (terms[..., :m][..., ::-1] + terms[..., n - m:]).sum(-1)
  return outer + terms[..., m:n - m].sum(-1)


def encode_twohot(x, bins):
  """Two-hot encode scalars x over sorted bins."""
  n = bins.shape[0]
  below = (bins <= x[..., None]).astype(jnp.int32).sum(-1) - 1
  below = jnp.clip(below, 0, n - 1)
  # Counted from the top so values outside the range land on an edge bin.
  above = n - (bins > x[..., None]).astype(jnp.int32).sum(-1)
  above = jnp.clip(above, 0, n - 1)
  equal = below == above
  dist_below = jnp.where(equal, 1, jnp.abs(bins[below] - x))
  dist_above = jnp.where(equal, 1, jnp.abs(bins[above] - x))
  total = dist_below + dist_above
  w_below = dist_above / total
  w_above = dist_below / total
  return (jax.nn.one_hot(below, n) * w_below[..., None] +
          jax.nn.one_hot(above, n) * w_above[..., None])


def sample_onehot(seed, probs):
  """One-hot samples by inverting the CDF: the class whose CDF interval holds
  a uniform draw. Avoids argmax, which XLA:CPU runs slowly."""
  cdf = jnp.cumsum(probs, -1)
  u = jax.random.uniform(seed, probs.shape[:-1] + (1,), f32) * cdf[..., -1:]
  # The chosen class is the number of CDF values at or below u; every draw
  # gets exactly one class (also u = 0 and rounding gaps between classes).
  idx = jnp.minimum((cdf <= u).astype(jnp.int32).sum(-1), probs.shape[-1] - 1)
  return jax.nn.one_hot(idx, probs.shape[-1], dtype=f32)


class Binary:

  def __init__(self, logit):
    self.logit = logit.astype(f32)

  def pred(self):
    return self.logit > 0

  def prob(self):
    return jax.nn.sigmoid(self.logit)

  def logp(self, x):
    x = x.astype(f32)
    return x * jax.nn.log_sigmoid(self.logit) + (1 - x) * jax.nn.log_sigmoid(
        -self.logit)

  def loss(self, target):
    return -self.logp(sg(target))

  def sample(self, seed):
    return jax.random.bernoulli(seed, self.prob())


class Categorical:
  """Categorical over the last axis with a uniform mixture; samples are
  integer class indices."""

  def __init__(self, logits, unimix=0.0):
    self.probs = fn.unimix_probs(logits, unimix)
    self.logprobs = jnp.log(self.probs)

  def pred(self):
    return jnp.argmax(self.probs, -1)

  def sample(self, seed):
    hard = sample_onehot(seed, self.probs)
    return (hard * jnp.arange(hard.shape[-1], dtype=f32)).sum(-1).astype(
        jnp.int32)

  def logp(self, x):
    return jnp.take_along_axis(
        self.logprobs, x[..., None].astype(jnp.int32), -1)[..., 0]

  def entropy(self):
    return -(self.probs * self.logprobs).sum(-1)

  def loss(self, target):
    return -self.logp(target)


class OneHotST:
  """Several categorical latents [..., latents, classes] sampled as one-hot
  vectors with straight-through gradients."""

  def __init__(self, logits, unimix=0.0):
    self.probs = fn.unimix_probs(logits, unimix)
    self.logprobs = jnp.log(self.probs)

  def sample(self, seed):
    hard = sample_onehot(seed, self.probs)
    return hard + self.probs - sg(self.probs)

  def pred(self):
    hard = jax.nn.one_hot(
        jnp.argmax(self.probs, -1), self.probs.shape[-1], dtype=f32)
    return hard + self.probs - sg(self.probs)

  def entropy(self):
    return -(self.probs * self.logprobs).sum((-2, -1))

  def kl(self, other):
    """KL(self || other) summed over latents."""
    return (self.probs * (self.logprobs - other.logprobs)).sum((-2, -1))


class BoundedNormal:
  """Normal with tanh-bounded mean and sigmoid-bounded std: the continuous
  action head. Samples are NOT clipped, so logp() and entropy() are those
  of the distribution that was sampled and the score function has zero
  mean. Clip where an action leaves the agent (the env wrapper, the world
  model's action input); replay stores the unclipped sample."""

  def __init__(self, mean, std, minstd=0.1, maxstd=1.0):
    self.mean = jnp.tanh(mean.astype(f32))
    self.std = (maxstd - minstd) * jax.nn.sigmoid(std.astype(f32) + 2) + minstd

  def pred(self):
    return self.mean

  def sample(self, seed):
    return self.mean + self.std * jax.random.normal(seed, self.mean.shape)

  def logp(self, x):
    z = (x - self.mean) / self.std
    lp = -0.5 * z * z - jnp.log(self.std) - 0.5 * jnp.log(2 * jnp.pi)
    return lp.sum(-1)

  def entropy(self):
    return (0.5 * jnp.log(2 * jnp.pi * jnp.e) + jnp.log(self.std)).sum(-1)

  def loss(self, target):
    return -self.logp(target)
