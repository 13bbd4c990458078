"""Cost of the masked pixel loss's mask, alone, at a given batch shape.

  python scripts/bench_masking.py [--batch 16 --length 64 --size 64 \
      --channels 3 --k_steps 3 --seed_loop True]

Prints the jitted, vectorised mask + weights time per batch and, with
--seed_loop, the time of seed 000's Python loop over batch, time and window
for the same batch. The train-step overhead comes from scripts/bench.py:
  python scripts/bench.py --configs size12m --task dummy_image
  python scripts/bench.py --configs size12m --task dummy_image \
      --dynamics.masked_loss True
"""

import argparse
import json
import pathlib
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from dreamerv3 import masking  # noqa: E402
from scripts.timing import time_calls  # noqa: E402


def seed_loop(images, k, alpha):
  """Seed 000's generate_mask, as written there (per-frame jnp ops)."""
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


def timed(fn, repeats):
  jax.block_until_ready(fn())
  return time_calls(lambda: jax.block_until_ready(fn()), repeats)[0]


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument('--batch', type=int, default=16)
  parser.add_argument('--length', type=int, default=64)
  parser.add_argument('--size', type=int, default=64)
  parser.add_argument('--channels', type=int, default=3)
  parser.add_argument('--k_steps', type=int, default=3)
  parser.add_argument('--alpha', type=float, default=5.0)
  parser.add_argument('--repeats', type=int, default=20)
  parser.add_argument('--seed_loop', type=lambda x: x == 'True',
                      default=True)
  args = parser.parse_args()
  shape = (args.batch, args.length, args.size, args.size, args.channels)
  rng = np.random.default_rng(0)
  images = rng.integers(0, 4, shape).astype(np.uint8)
  is_first = rng.uniform(size=shape[:2]) < 0.01
  images, is_first = jnp.asarray(images), jnp.asarray(is_first)

  fn = jax.jit(lambda x, f: masking.mask_weights(
      masking.moving_mask(x, f, args.k_steps), args.alpha))
  start = time.perf_counter()
  jax.block_until_ready(fn(images, is_first))
  results = {
      'shape': list(shape), 'k_steps': args.k_steps,
      'compile_s': time.perf_counter() - start,
      'mask_ms': 1e3 * timed(lambda: fn(images, is_first), args.repeats)}
  if args.seed_loop:
    start = time.perf_counter()
    # Signed ints as in the seed's float images; uint8 would wrap in abs.
    ref = seed_loop(images.astype(jnp.int32), args.k_steps, args.alpha)
    jax.block_until_ready(ref)
    results['seed_loop_s'] = time.perf_counter() - start
    ours = fn(images, jnp.zeros_like(is_first))
    # With no episode starts, cross_episodes makes no difference.
    assert bool((ref == ours).all()), 'seed loop and ours disagree'
  print(json.dumps({k: round(v, 4) if isinstance(v, float) else v
                    for k, v in results.items()}))


if __name__ == '__main__':
  main()
