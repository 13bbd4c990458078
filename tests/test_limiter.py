import pickle

import numpy as np
import pytest

from embodied.core.limiters import RatioLimiter


@pytest.mark.parametrize('ratio,batch_steps', [
    (512, 16 * 64), (32, 16 * 64), (1000, 16 * 64), (0.5, 8 * 8)])
def test_long_run_matches_ratio(ratio, batch_steps):
  rng = np.random.default_rng(0)
  limiter = RatioLimiter(ratio, batch_steps, min_steps=1000)
  env_steps, updates = 0, 0
  while env_steps < 500_000:
    env_steps += int(rng.integers(1, 17))  # e.g. a varying number of envs
    updates += limiter(env_steps)
  assert updates * batch_steps / env_steps == pytest.approx(ratio, rel=0.01)


def test_nothing_before_min_steps():
  limiter = RatioLimiter(1024, 64, min_steps=500)
  assert all(limiter(steps) == 0 for steps in range(500))
  assert sum(limiter(steps) for steps in range(500, 600)) == 99 * 16


def test_fractional_credit_carries_over():
  limiter = RatioLimiter(ratio=1, batch_steps=10, min_steps=0)
  granted = [limiter(steps) for steps in range(1, 101)]
  assert sum(granted) == 10
  assert granted.index(1) == 9  # First update once 10 steps were collected.
  assert max(granted) == 1  # Spread out, not bunched.


def test_no_burst_when_training_starts():
  limiter = RatioLimiter(512, 1024, min_steps=5000)
  assert limiter(4999) == 0
  assert limiter(5001) <= 1


def test_save_load_continues():
  a = RatioLimiter(64, 32, min_steps=10)
  assert a(1000) == 1980
  b = RatioLimiter(64, 32, min_steps=10)
  b.load(pickle.loads(pickle.dumps(a.save())))
  assert a(2000) == b(2000) == 2000  # (2000 - 10) * 64 / 32 - 1980
  assert a(5000) == b(5000)


def test_counter_going_back_grants_nothing():
  limiter = RatioLimiter(2, 1, min_steps=0)
  assert limiter(100) == 200
  assert limiter(50) == 0
  assert limiter(101) == 2


def test_rejects_bad_arguments():
  with pytest.raises(ValueError):
    RatioLimiter(-1, 10)
  with pytest.raises(ValueError):
    RatioLimiter(1, 0)
