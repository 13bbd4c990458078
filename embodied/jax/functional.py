"""Small numeric building blocks shared by agents. Pure functions of arrays."""

import jax
import jax.numpy as jnp

sg = jax.lax.stop_gradient
f32 = jnp.float32


def symlog(x):
  return jnp.sign(x) * jnp.log1p(jnp.abs(x))


def symexp(x):
  return jnp.sign(x) * jnp.expm1(jnp.abs(x))


def lambda_return(rew, val, cont, disc, lam):
  """TD(lambda) returns along axis 1, computed backwards with a scan.

  rew, cont: [B, T] reward and continuation flag of the transition from step
  t to step t + 1. val: [B, T + 1] value estimates; the last bootstraps.
  lam: a number or [B, T] (0 where the return must bootstrap from v_{t+1}).
  Returns [B, T]: R_t = r_t + disc c_t ((1 - lam_t) v_{t+1} + lam_t R_{t+1}).
  """
  assert rew.shape == cont.shape and val.shape[1] == rew.shape[1] + 1
  lam = jnp.broadcast_to(jnp.asarray(lam, rew.dtype), rew.shape)
  interm = rew + disc * cont * (1 - lam) * val[:, 1:]

  def step(ret, inp):
    interm_t, cont_t, lam_t = inp
    ret = interm_t + disc * cont_t * lam_t * ret
    return ret, ret

  _, rets = jax.lax.scan(
      step, val[:, -1], (interm.T, cont.T, lam.T), reverse=True)
  return rets.T


def unimix_probs(logits, unimix):
  """Softmax probabilities mixed with a uniform distribution."""
  probs = jax.nn.softmax(logits.astype(f32), -1)
  if unimix:
    probs = (1 - unimix) * probs + unimix / probs.shape[-1]
  return probs


def free_nats_kl(kl, free):
  """Clip a KL term from below so the model is not pushed past `free` nats."""
  return jnp.maximum(kl, free) if free else kl
