import numpy as np
import pytest

from embodied.core.sumtree import SumTree

# chi2.ppf(0.999, df) from scipy, hard-coded so the test needs no scipy.
CHI2_999 = {19: 43.8202, 29: 58.3012, 49: 85.3506, 99: 148.2304}


def chi2_stat(counts, probs):
  expected = probs * counts.sum()
  return ((counts - expected) ** 2 / expected).sum()


def slow_find(leaves, value):
  """Reference: the first id whose running sum exceeds value."""
  running = 0.0
  for i, w in enumerate(leaves):
    running += w
    if value < running and w > 0:
      return i
  return max(i for i, w in enumerate(leaves) if w > 0)


@pytest.mark.parametrize('branching', [2, 3, 32])
def test_nodes_are_exact_sums_after_updates(branching):
  rng = np.random.default_rng(0)
  tree = SumTree(0, branching)
  reference = np.zeros(0)
  for _ in range(200):
    ids = rng.integers(0, 3000, rng.integers(1, 40))
    values = rng.exponential(size=len(ids)) * (rng.random(len(ids)) < 0.8)
    tree.set(ids, values)
    if ids.max() >= len(reference):
      reference = np.concatenate([reference, np.zeros(ids.max() + 1 -
                                                      len(reference))])
    for i, v in zip(ids, values):  # Later writes win, as documented.
      reference[i] = v
  tree.check()
  np.testing.assert_array_equal(tree.leaves[:len(reference)], reference)
  assert not tree.leaves[len(reference):].any()
  assert tree.total == pytest.approx(reference.sum(), rel=1e-12)
  np.testing.assert_array_equal(tree.get(np.arange(len(reference))), reference)


def test_find_matches_running_sum():
  rng = np.random.default_rng(1)
  leaves = rng.exponential(size=300) * (rng.random(300) < 0.5)
  tree = SumTree(0, 4)
  tree.set(np.arange(300), leaves)
  inner = rng.random(500) * tree.total
  np.testing.assert_array_equal(
      tree.find(inner), [slow_find(leaves, v) for v in inner])
  # Exact boundaries and the ends may round to either neighbour, never to
  # a zero leaf or past the last one.
  edges = np.concatenate([
      [0.0, tree.total * (1 - 1e-16), tree.total],
      np.cumsum(leaves)[leaves > 0][:50]])
  for value, found in zip(edges, tree.find(edges)):
    assert leaves[found] > 0
    assert found in (slow_find(leaves, value * (1 - 1e-12)),
                     slow_find(leaves, value * (1 + 1e-12))), value


def test_frequencies_match_weights():
  rng = np.random.default_rng(2)
  weights = rng.uniform(0.1, 2.0, 50)
  tree = SumTree(0)
  ids = np.arange(50) * 37 + 5  # Sparse ids with zero leaves between.
  tree.set(ids, weights)
  draws = tree.sample(200_000, np.random.default_rng(3))
  assert np.isin(draws, ids).all()
  counts = np.bincount((draws - 5) // 37, minlength=50)
  assert chi2_stat(counts, weights / weights.sum()) < CHI2_999[49]


def test_zero_weights_never_drawn_and_empty_raises():
  tree = SumTree(10)
  with pytest.raises(ValueError, match='zero'):
    tree.sample(1, np.random.default_rng(0))
  tree.set([3, 7], [1.0, 0.0])
  assert set(tree.sample(1000, np.random.default_rng(0)).tolist()) == {3}
  tree.set([3], 0.0)
  assert tree.total == 0.0
  with pytest.raises(ValueError, match='non-negative'):
    tree.set([1], -1.0)
  with pytest.raises(ValueError, match='non-negative'):
    tree.set([1], np.nan)


def test_growth_keeps_leaves_and_assign_rebuilds():
  tree = SumTree(0, 4)
  tree.set([1], 2.0)
  tree.set([10_000], 3.0)  # Grows by several levels.
  tree.check()
  assert tree.capacity >= 10_001
  assert tree.get([1, 10_000, 5]).tolist() == [2.0, 3.0, 0.0]
  assert tree.total == 5.0
  other = SumTree(0, 4)
  other.assign(tree.leaves)
  other.check()
  assert other.capacity == tree.capacity
  rng1, rng2 = np.random.default_rng(5), np.random.default_rng(5)
  np.testing.assert_array_equal(tree.sample(100, rng1), other.sample(100, rng2))
