"""The DreamerV3 optimizer built from optax pieces: adaptive gradient clipping
followed by LaProp (RMS-normalise the gradient, then momentum), a linear
warmup, and an optax state kept in ninjax variables."""

import jax
import jax.numpy as jnp
import ninjax as nj
import optax

f32 = jnp.float32


def clip_by_agc(clip=0.3, pmin=1e-3):
  """Scale each gradient tensor so its norm is at most clip * max(|param|, pmin)."""
  def update(updates, state, params):
    def fn(g, p):
      limit = clip * jnp.maximum(pmin, jnp.linalg.norm(p.reshape(-1)))
      gnorm = jnp.linalg.norm(g.reshape(-1))
      return g * (1 / jnp.maximum(1.0, gnorm / limit))
    return jax.tree.map(fn, updates, params), state
  return optax.GradientTransformation(lambda p: optax.EmptyState(), update)


def scale_by_laprop(beta1=0.9, beta2=0.999, eps=1e-20):
  """LaProp: normalise by the RMS of past gradients first, then apply
  momentum to the normalised gradient (both bias-corrected)."""

  def init(params):
    zeros = lambda: jax.tree.map(jnp.zeros_like, params)
    return {'step': jnp.zeros((), jnp.int32), 'mom': zeros(), 'nu': zeros()}

  def update(updates, state, params=None):
    step = state['step'] + 1
    nu = jax.tree.map(
        lambda v, g: beta2 * v + (1 - beta2) * g * g, state['nu'], updates)
    nu_hat_corr = 1 - beta2 ** step.astype(f32)
    normed = jax.tree.map(
        lambda g, v: g / (jnp.sqrt(v / nu_hat_corr) + eps), updates, nu)
    mom = jax.tree.map(
        lambda m, g: beta1 * m + (1 - beta1) * g, state['mom'], normed)
    mom_corr = 1 - beta1 ** step.astype(f32)
    out = jax.tree.map(lambda m: m / mom_corr, mom)
    return out, {'step': step, 'mom': mom, 'nu': nu}

  return optax.GradientTransformation(init, update)


def make_optax(lr, agc=0.3, eps=1e-20, beta1=0.9, beta2=0.999, warmup=1000):
  parts = []
  if agc:
    parts.append(clip_by_agc(agc))
  parts.append(scale_by_laprop(beta1, beta2, eps))
  sched = optax.linear_schedule(0.0, lr, warmup) if warmup else lr
  parts.append(optax.scale_by_learning_rate(sched))
  return optax.chain(*parts)


class Optimizer(nj.Module):
  """Differentiates a loss with respect to the parameters of some modules and
  applies the optax update in place."""

  def __init__(self, modules, **kwargs):
    self.modules = modules if isinstance(modules, (list, tuple)) else [modules]
    self.opt = make_optax(**kwargs)
    self.treedef = None

  def __call__(self, lossfn, *args, **kwargs):
    loss, params, grads, aux = nj.grad(
        lossfn, self.modules, has_aux=True)(*args, **kwargs)
    if self.treedef is None or not self.values:
      # First call on a fresh state (each member of a multi-seed agent is
      # created from an empty state in turn).
      mapping, self.treedef = nj.flatten(self.opt.init(params))
      for key, value in mapping.items():
        self.value(key, value)
    state = nj.unflatten(self.values, self.treedef)
    updates, state = self.opt.update(grads, state, params)
    for key, value in nj.flatten(state)[0].items():
      self.write(key, value)
    nj.context().update(optax.apply_updates(params, updates))
    gnorm = optax.tree.norm(grads)
    unorm = optax.tree.norm(updates)
    metrics = {'opt/grad_norm': gnorm, 'opt/update_norm': unorm,
               'opt/loss': loss}
    return metrics, aux
