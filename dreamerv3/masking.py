"""Masked pixel reconstruction loss: weight the pixels that move.

Most Atari pixels are static background; the few that change (ball, paddle,
enemies) carry the information. A pixel value (per channel) at time t counts
as moving if it differs from the same pixel at any step j with |j - t| <= k
of the training sequence; moving pixels weigh `alpha_strength` in the
squared image error, all others 1. By default the window stops at episode
starts (`is_first`), so a reset does not mark the whole frame as moving;
`cross_episodes` lets the window span episodes, as the original method's did.

Config `masking.*` (DEFAULTS below); the original method's flags
(`dynamics.masked_loss`, `dynamics.k_steps`, ...) are its aliases. An
extension (dreamerv3/extensions.py) that fills the `recon_weights` seam
only: no parameters, no structural keys, no host state.
"""

import jax
import jax.numpy as jnp

from . import rssm
from .extensions import Extension

f32 = jnp.float32
CONFIG = ('masking',)
DEFAULTS = """
# Masked pixel loss (dreamerv3/masking.py): image pixels that change within
# +-k_steps weigh alpha_strength in the image loss.
masking:
  enabled: False          # weigh moving pixels in the image loss (needs images)
  k_steps: 3              # a pixel moves if it changes within +-k_steps steps
  alpha_strength: 5.0     # weight of a moving pixel (the others weigh 1)
  cross_episodes: False   # True: the window also spans episode starts
"""
# The method's own flags.
ALIASES = {
    'dynamics.masked_loss': 'masking.enabled',
    'dynamics.k_steps': 'masking.k_steps',
    'dynamics.alpha_strength': 'masking.alpha_strength',
    'dynamics.cross_episodes': 'masking.cross_episodes',
}
RANGES = ((r'masking\.k_steps', 'int', 0, None),)
# Weights change no parameter shapes: any values can resume a logdir.
STRUCTURAL = ()


def moving_mask(images, is_first, k, cross_episodes):
  """images [B, T, ...] (raw values), is_first [B, T] -> bool [B, T, ...].

  One comparison of the sequence with itself shifted by d per offset
  d = 1..k: O(k) elementwise work on device, no loop over batch or time.
  """
  B, T = images.shape[:2]
  event = (1,) * (images.ndim - 2)
  episode = jnp.cumsum(is_first.astype(jnp.int32), 1)  # episode index
  moving = jnp.zeros(images.shape, bool)
  for d in range(1, min(int(k), T - 1) + 1):
    diff = images[:, d:] != images[:, :-d]  # step t vs t + d
    if not cross_episodes:
      # An episode starts in (t, t + d] iff the episode index changes.
      same = episode[:, d:] == episode[:, :-d]
      diff = diff & same.reshape(same.shape + event)
    pad = jnp.zeros((B, d, *images.shape[2:]), bool)
    # Marks both ends: t differs from t + d, and t + d differs from t.
    moving = (moving | jnp.concatenate([diff, pad], 1) |
              jnp.concatenate([pad, diff], 1))
  return moving


def mask_weights(moving, alpha):
  return jnp.where(moving, f32(alpha), f32(1.0))


class MaskedPixelLoss(Extension):
  """recon_weights seam: obs -> ({image key: weights}, metrics)."""

  name = 'masking'

  def __init__(self, keys, k_steps, alpha_strength, cross_episodes):
    self.keys = tuple(keys)
    self.k = int(k_steps)
    self.alpha = float(alpha_strength)
    self.cross_episodes = bool(cross_episodes)

  def recon_weights(self, obs):
    return self(obs)

  def __call__(self, obs):
    weights, metrics = {}, {}
    for key in self.keys:
      moving = moving_mask(obs[key], obs['is_first'], self.k,
                           self.cross_episodes)
      # Materialise the weights once: fused into the image loss and its
      # gradient, XLA:CPU would recompute the shifted comparisons there.
      weights[key] = jax.lax.optimization_barrier(
          mask_weights(moving, self.alpha))
      metrics[f'masking/moving_frac_{key}'] = moving.astype(f32).mean()
    return weights, metrics


def check_spaces(config, obs_space):
  if config.masking.enabled and not rssm.image_keys(obs_space):
    return ('masking.enabled True needs image observations, but the task '
            f"{config.task} has none (observations: "
            f"{', '.join(k for k in obs_space if not k.startswith('log/'))})")
  return None


def install(agent, config):
  """The masked loss on the agent's recon_weights seam, or None when
  disabled."""
  c = config.masking
  if not c.enabled:
    return None
  keys = rssm.image_keys(agent.obs_space)
  return MaskedPixelLoss(keys, c.k_steps, c.alpha_strength, c.cross_episodes)
