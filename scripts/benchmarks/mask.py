"""Cost of the masked pixel loss's mask, alone: the jitted, vectorised mask +
weights time per batch of batch_size x batch_length random frames, with
masking.k_steps, masking.alpha_strength and masking.cross_episodes from
the config. With --bench.seed_loop, also the time of seed 000's Python loop
over batch, time and window for the same batch, and a check that both give
the same weights.

  python scripts/bench.py mask
  python scripts/bench.py mask --batch_size 16 --batch_length 64 \\
      --bench.image 64,64,3 --masking.k_steps 3 --bench.seed_loop False

The overhead on the train step comes from
  python scripts/bench.py ab --configs size12m --task dummy_image \\
      --bench.variant "--masking.enabled True"
"""

import time

import numpy as np

from scripts.benchmarks import common

OPTIONS = {
    'image': ('64,64,3', 'frame shape height,width,channels'),
    'repeats': (20, 'timed calls'),
    'seed_loop': (True, "also time (and compare) the seed's Python loop"),
}


def seed_loop(images, k, alpha):
  """Seed 000's generate_mask, as written there (per-frame jnp ops)."""
  import jax.numpy as jnp
  masks = []
  for b in range(images.shape[0]):
    seq = images[b]
    n = seq.shape[0]
    for i in range(n):
      temp = jnp.zeros(seq.shape[1:], dtype=int)
      for j in range(max(0, i - k), min(n, i + k + 1)):
        temp += (jnp.abs(seq[i] - seq[j]) > 0).astype(int)
      masks.append((temp > 0).astype(int))
  mask = jnp.array(masks).reshape(images.shape)
  return jnp.where(mask > 0, alpha, 1)


def run(options, flags):
  import jax
  import jax.numpy as jnp
  from dreamerv3 import masking
  config = common.parse_config(flags)
  common.setup_jax(config)
  k, alpha = config.masking.k_steps, config.masking.alpha_strength
  cross = config.masking.cross_episodes
  frame = tuple(int(x) for x in options['image'].split(','))
  shape = (config.batch_size, config.batch_length, *frame)
  rng = np.random.default_rng(0)
  images = jnp.asarray(rng.integers(0, 4, shape).astype(np.uint8))
  is_first = jnp.asarray(rng.uniform(size=shape[:2]) < 0.01)

  fn = jax.jit(lambda x, f: masking.mask_weights(
      masking.moving_mask(x, f, k, cross), alpha))
  start = time.perf_counter()
  jax.block_until_ready(fn(images, is_first))
  results = {
      'shape': list(shape), 'k_steps': k,
      'compile_s': time.perf_counter() - start,
      'mask_ms': 1e3 * common.time_calls(
          lambda: jax.block_until_ready(fn(images, is_first)),
          options['repeats'])[0]}
  if options['seed_loop']:
    start = time.perf_counter()
    # Signed ints as in the seed's float images; uint8 would wrap in abs.
    ref = jax.block_until_ready(
        seed_loop(images.astype(jnp.int32), k, alpha))
    results['seed_loop_s'] = time.perf_counter() - start
    # With no episode starts, cross_episodes makes no difference.
    ours = fn(images, jnp.zeros_like(is_first))
    results['seed_loop_same'] = bool((ref == ours).all())
    if not results['seed_loop_same']:
      raise SystemExit('The seed loop and ours disagree: ' + str(results))
  return results
