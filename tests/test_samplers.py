import pickle
import threading

import numpy as np
import pytest

from embodied.core.replay import Replay
from embodied.core.samplers import (
    Mixture, Prioritized, Recency, Uniform, parse_initial, split_counts)

from .test_sumtree import CHI2_999, chi2_stat


def roundtrip(data):
  return pickle.loads(pickle.dumps(data))


def weights_of(sampler, ids):
  return sampler._tree.get(ids)


def prio_of(sampler, ids):
  saved = sampler.save()
  lookup = dict(zip(saved['ids'].tolist(), saved['prio'].tolist()))
  return np.array([lookup[i] for i in ids])


def slow_priority(row, maxfrac, exponent):
  row = [float(v) for v in row]
  p = maxfrac * max(row) + (1 - maxfrac) * sum(row) / len(row)
  return max(p, 0.0) ** exponent


# Prioritized.

def test_prioritized_frequencies_match_priorities():
  rng = np.random.default_rng(0)
  sampler = Prioritized(exponent=0.8, maxfrac=0.5, initial=1.0, seed=1)
  ids = rng.permutation(1000)[:50]
  sampler.insert(ids)
  values = rng.exponential(size=(50, 7)).astype(np.float32)
  sampler.prioritize(ids, values)
  expected = np.array([slow_priority(r, 0.5, 0.8) for r in values])
  np.testing.assert_allclose(weights_of(sampler, ids), expected, rtol=1e-6)
  draws = sampler.sample(200_000)
  position = {int(i): k for k, i in enumerate(ids)}
  counts = np.bincount([position[int(i)] for i in draws], minlength=50)
  assert chi2_stat(counts, expected / expected.sum()) < CHI2_999[49]
  # The same draws from a tree with the wrong exponent are rejected, so the
  # test has power.
  wrong = expected ** (1 / 0.8)
  assert chi2_stat(counts, wrong / wrong.sum()) > CHI2_999[49]


def test_prioritized_matches_reference_under_random_ops():
  rng = np.random.default_rng(1)
  sampler = Prioritized(exponent=0.5, maxfrac=0.3, initial=2.0, seed=0)
  weight = {}  # id -> expected tree weight
  for _ in range(300):
    op = rng.random()
    if weight and op < 0.3:
      ids = rng.choice(sorted(weight), min(len(weight), 5), replace=False)
      sampler.remove(ids)
      for i in ids:
        del weight[int(i)]
    elif weight and op < 0.6:
      ids = rng.choice(sorted(weight), 4)  # Repeats: the last row wins.
      values = rng.normal(1, 1, (4, 3)).astype(np.float32)
      sampler.prioritize(np.concatenate([ids, [10 ** 6]]),
                         np.concatenate([values, np.ones((1, 3))]))
      for i, row in zip(ids, values):
        weight[int(i)] = slow_priority(row, 0.3, 0.5)
    else:
      free = np.setdiff1d(np.arange(500), list(weight))
      ids = rng.choice(free, 3, replace=False)
      sampler.insert(ids)
      weight.update({int(i): 2.0 ** 0.5 for i in ids})
    assert len(sampler) == len(weight)
    keys = np.array(sorted(weight), np.int64)
    np.testing.assert_allclose(
        weights_of(sampler, keys), [weight[k] for k in keys], rtol=1e-6)
    assert sampler._tree.total == pytest.approx(sum(weight.values()),
                                                rel=1e-6, abs=1e-12)
    if weight and sampler._tree.total > 0:
      assert set(sampler.sample(20).tolist()) <= set(weight)
  sampler._tree.check()


def test_prioritized_errors():
  sampler = Prioritized(initial=1.0)
  with pytest.raises(ValueError, match='empty'):
    sampler.sample(1)
  sampler.insert([1, 2])
  with pytest.raises(KeyError):
    sampler.insert([2])
  with pytest.raises(KeyError):
    sampler.remove([3])
  with pytest.raises(ValueError, match='maxfrac'):
    Prioritized(maxfrac=1.5)
  with pytest.raises(ValueError, match="'nope'"):
    parse_initial('nope')
  assert parse_initial('inf') == float('inf')
  assert parse_initial('MeanStd') == 'meanstd'
  assert parse_initial('0.5') == 0.5


def test_updates_for_removed_items_and_bad_values_are_dropped():
  sampler = Prioritized(exponent=1.0, maxfrac=0.0, initial=1.0)
  sampler.insert([0, 1, 2])
  sampler.remove([1])
  sampler.prioritize([1, 2, 0], np.array([[5.0], [3.0], [np.nan]]))
  assert len(sampler) == 2
  np.testing.assert_array_equal(weights_of(sampler, [0, 1, 2]), [1, 0, 3])
  sampler.prioritize([0], [[-4.0]])  # Clipped at zero.
  assert weights_of(sampler, [0])[0] == 0
  assert set(sampler.sample(100).tolist()) == {2}


def test_meanstd_initial_value():
  sampler = Prioritized(exponent=1.0, maxfrac=0.0, initial='meanstd')
  sampler.insert([0, 1, 2])
  np.testing.assert_array_equal(prio_of(sampler, [0, 1, 2]), 1.0)  # No data.
  sampler.prioritize([0, 1], [[1.0, 3.0], [6.0, 6.0]])  # Priorities 2, 6.
  sampler.insert([3])
  mean, std = np.mean([2.0, 6.0]), np.std([2.0, 6.0])
  assert prio_of(sampler, [3])[0] == pytest.approx(mean + std)
  # Never-updated items (2 and 3) do not enter the statistics.
  sampler.insert([4])
  assert prio_of(sampler, [4])[0] == pytest.approx(mean + std)
  stats = sampler.stats()
  assert stats['prio_mean'] == pytest.approx(4.0)
  assert stats['prio_std'] == pytest.approx(2.0)
  assert stats['prio_max'] == pytest.approx(6.0)
  assert stats['prio_never_updated'] == pytest.approx(3 / 5)
  # Removing an updated item takes it out of the statistics.
  sampler.remove([1])
  sampler.insert([5])
  assert prio_of(sampler, [5])[0] == pytest.approx(2.0)


def test_inf_initial_queue_is_sampled_first():
  sampler = Prioritized(exponent=1.0, maxfrac=0.0, initial='inf', seed=3)
  sampler.insert(np.arange(10))
  sampler.prioritize([0, 1], [[4.0], [4.0]])  # Leave the queue by update.
  assert sampler.stats()['prio_queued'] == 8
  peek = sampler.sample(3, commit=False)
  assert len(set(peek.tolist())) == 3 and set(peek.tolist()) <= set(range(2, 10))
  assert sampler.stats()['prio_queued'] == 8
  first = sampler.sample(5)
  assert len(set(first.tolist())) == 5 and set(first.tolist()) <= set(range(2, 10))
  left = np.setdiff1d(np.arange(2, 10), first)  # 3 still queued
  sampler.remove(left[:1])
  second = sampler.sample(4)
  # The two left in the queue, then tree draws.
  assert sorted(second[:2].tolist()) == left[1:].tolist()
  assert sampler.stats()['prio_queued'] == 0
  assert not len(sampler._take_pending(5, commit=True))
  # Drawn items hold mean + std of the updated ones (4, std 0) meanwhile.
  np.testing.assert_allclose(weights_of(sampler, first), 4.0)


def test_zero_on_sample():
  sampler = Prioritized(exponent=1.0, maxfrac=0.0, initial=1.0,
                        zero_on_sample=True, seed=0)
  sampler.insert([0, 1, 2])
  drawn = sampler.sample(1)
  assert weights_of(sampler, drawn)[0] == 0
  others = set(sampler.sample(200, commit=False).tolist())
  assert drawn[0] not in others
  sampler.prioritize(drawn, [[2.0]])
  assert weights_of(sampler, drawn)[0] == 2.0
  sampler.sample(50)
  assert sampler._tree.total == 0
  # All zero: uniform fallback instead of an error.
  assert set(sampler.sample(300).tolist()) == {0, 1, 2}


def test_prioritized_save_load_same_samples():
  rng = np.random.default_rng(4)
  sampler = Prioritized(initial='inf', zero_on_sample=True, seed=7)
  sampler.insert(np.arange(200) * 3)
  sampler.sample(30)
  ids = np.arange(0, 200, 2) * 3
  sampler.prioritize(ids, rng.exponential(size=(len(ids), 5)))
  sampler.remove([3, 9])
  restored = Prioritized(initial='inf', zero_on_sample=True, seed=0)
  restored.load(roundtrip(sampler.save()))
  assert len(restored) == len(sampler)
  assert restored.stats() == sampler.stats()
  for _ in range(5):
    np.testing.assert_array_equal(sampler.sample(16), restored.sample(16))
  np.testing.assert_array_equal(restored._tree.leaves, sampler._tree.leaves)
  restored._tree.check()


# Recency.

def test_recency_frequencies_match_formula():
  rng = np.random.default_rng(5)
  sampler = Recency(recexp=0.7, seed=2)
  ids = rng.permutation(10_000)[:60]
  for i in ids:  # Inserted one at a time, like replay does.
    sampler.insert([i])
  removed = ids[[0, 3, 20, 21, 40, 59]]
  sampler.remove(removed)
  live = [i for i in ids if i not in removed]
  age = {int(i): len(ids) - 1 - k for k, i in enumerate(ids)}
  np.testing.assert_array_equal(sampler.ages(live), [age[i] for i in live])
  expected = np.array([(age[i] + 1.0) ** -0.7 for i in live])
  draws = sampler.sample(200_000)
  position = {int(i): k for k, i in enumerate(live)}
  counts = np.bincount([position[int(i)] for i in draws],
                       minlength=len(live))
  assert len(live) - 1 == 53
  critical = 85.3506 + (98.0 - 85.3506) * 4 / 10  # Between df 49 and 59.
  assert chi2_stat(counts, expected / expected.sum()) < critical
  uniform = np.ones(len(live))
  assert chi2_stat(counts, uniform / len(live)) > critical


def test_recency_random_ops_and_save_load():
  rng = np.random.default_rng(6)
  sampler = Recency(recexp=1.0, seed=0)
  live = []
  for _ in range(400):
    if live and rng.random() < 0.3:
      k = min(len(live), int(rng.integers(1, 30)))
      gone = live[:k]  # Mostly the oldest, like FIFO eviction.
      if rng.random() < 0.3:
        gone = list(rng.choice(live, k, replace=False))
      sampler.remove(gone)
      live = [i for i in live if i not in set(gone)]
    else:
      free = np.setdiff1d(np.arange(3000), live)
      new = rng.choice(free, int(rng.integers(1, 10)), replace=False).tolist()
      sampler.insert(new)
      live += new
    assert len(sampler) == len(live)
    if live:
      assert set(sampler.sample(30).tolist()) <= set(live)
  restored = Recency(recexp=1.0)
  restored.load(roundtrip(sampler.save()))
  np.testing.assert_array_equal(restored.ages(live), sampler.ages(live))
  np.testing.assert_array_equal(restored.sample(50), sampler.sample(50))
  # Memory follows the live span, not everything ever inserted.
  assert len(sampler._order) <= 4 * (sampler._next - sampler._base) + 64


# Mixture.

def slow_split(fracs, n):
  shares = [n * f / sum(fracs) for f in fracs]
  counts = [int(np.floor(s)) for s in shares]
  while sum(counts) < n:
    best = max((s - c, -i) for i, (s, c) in enumerate(zip(shares, counts))
               if fracs[i] > 0)
    counts[-best[1]] += 1
  return counts


def test_split_counts_are_exact():
  rng = np.random.default_rng(7)
  for _ in range(300):
    fracs = rng.random(3) * (rng.random(3) < 0.8)
    if not fracs.sum():
      continue
    n = int(rng.integers(0, 40))
    counts = split_counts(fracs, n)
    assert counts.sum() == n and (counts[fracs == 0] == 0).all()
    assert counts.tolist() == slow_split(fracs.tolist(), n), (fracs, n)
  assert split_counts([0.5, 0.25, 0.25], 16).tolist() == [8, 4, 4]
  assert split_counts([1, 1, 1], 16).tolist() == [6, 5, 5]


class Tagged(Uniform):
  """Returns its tag as every id, to count draws per sampler."""

  def __init__(self, tag):
    super().__init__()
    self.tag = tag

  def sample(self, n, commit=True):
    return np.full(n, self.tag, np.int64)


def test_mixture_fractions_hold_exactly():
  mix = Mixture({'uniform': Tagged(-1), 'priority': Tagged(-2),
                 'recency': Tagged(-3)},
                {'uniform': 0.2, 'priority': 0.5, 'recency': 0.3})
  mix.insert([1, 2, 3])
  for n in (1, 7, 16, 33):
    draws = mix.sample(n)
    counts = [int((draws == t).sum()) for t in (-1, -2, -3)]
    assert counts == split_counts([0.2, 0.5, 0.3], n).tolist()
  with pytest.raises(ValueError, match='positive sum'):
    Mixture({'uniform': Uniform()}, {'uniform': 0.0})


def test_mixture_forwards_everything():
  prio = Prioritized(exponent=1.0, maxfrac=0.0, initial=1.0, seed=1)
  mix = Mixture({'uniform': Uniform(0), 'priority': prio,
                 'recency': Recency(1.0, 2)},
                {'uniform': 0.5, 'priority': 0.25, 'recency': 0.25})
  mix.insert(np.arange(10))
  mix.remove([3])
  mix.prioritize([4], [[9.0]])
  assert len(mix) == 9 and all(len(s) == 9 for s in mix.samplers.values())
  assert weights_of(prio, [4])[0] == 9.0
  assert 'prio_mean' in mix.stats()
  other = Mixture({'uniform': Uniform(5), 'priority': Prioritized(seed=5),
                   'recency': Recency(1.0, 5)},
                  {'uniform': 0.5, 'priority': 0.25, 'recency': 0.25})
  other.load(roundtrip(mix.save()))
  np.testing.assert_array_equal(mix.sample(16), other.sample(16))


# Through the replay buffer.

def add_steps(replay, worker, start, count):
  for t in range(start, start + count):
    replay.add({'t': np.int64(t), 'w': np.int32(worker)}, worker)


def test_replay_maps_rows_to_items():
  length, context = 5, 1
  sampler = Prioritized(exponent=1.0, maxfrac=0.0, initial=1.0, seed=0)
  replay = Replay(length, capacity=1000, chunksize=16, online=False,
                  sampler=sampler)
  add_steps(replay, 0, 0, 40)
  batch = replay.sample(8)
  trained = batch['stepid'][:, context:]
  values = np.arange(8 * (length - context), dtype=np.float32).reshape(8, -1)
  replay.prioritize(trained, values)
  items = batch['stepid'][:, 0]
  last = {}
  for item, row in zip(items, values):
    last[int(item)] = row.mean()
  np.testing.assert_allclose(weights_of(sampler, list(last)),
                             list(last.values()))
  with pytest.raises(ValueError, match='shape'):
    replay.prioritize(trained, values[:, :2])


def test_replay_drops_priorities_of_reused_slots():
  length = 4
  sampler = Prioritized(exponent=1.0, maxfrac=0.0, initial=1.0, seed=0)
  replay = Replay(length, capacity=32, chunksize=8, online=False,
                  sampler=sampler)
  add_steps(replay, 0, 0, 20)
  batch = replay.sample(16)
  # Enough new data to evict and refill the sampled chunks' slots.
  add_steps(replay, 0, 20, 60)
  replay.prioritize(batch['stepid'], np.full((16, length), 50.0))
  assert weights_of(sampler, replay.item_ids()).max() == 1.0
  # A batch sampled now is prioritized normally.
  batch = replay.sample(4)
  replay.prioritize(batch['stepid'], np.full((4, length), 50.0))
  assert weights_of(sampler, batch['stepid'][:, 0]).tolist() == [50.0] * 4


def test_replay_item_ids_gather_and_stats():
  replay = Replay(4, capacity=1000, chunksize=8, online=False,
                  sampler=Recency(1.0, 0))
  add_steps(replay, 0, 0, 30)
  add_steps(replay, 1, 0, 10)
  ids = replay.item_ids()
  assert len(ids) == len(replay.sampler) == (30 - 3) + (10 - 3)
  batch = replay.gather(ids)
  assert (np.diff(batch['t'], axis=1) == 1).all()
  assert replay.stats()['replay/samples'] == 0  # gather is not sampling
  batch = replay.sample(500)
  stats = replay.stats()
  # Age: steps added after the item's last step, over both streams
  # (stream 0 added steps 0..29 first, then stream 1 its 10 steps).
  t_last, worker = batch['t'][:, -1], batch['w'][:, 0]
  ages = np.where(worker == 0, 39 - t_last, 39 - (30 + t_last))
  assert stats['replay/sample_age'] == pytest.approx(ages.mean())
  assert stats['replay/sample_ms'] > 0
  assert 'replay/sample_age' not in replay.stats()  # Reset per call.
  replay.sample(10, commit=False)
  assert replay.stats()['replay/samples'] == 500


def test_replay_save_load_with_prioritized_sampler(tmp_path):
  def make():
    sampler = Mixture(
        {'uniform': Uniform(1), 'priority': Prioritized(initial='inf', seed=2)},
        {'uniform': 0.25, 'priority': 0.75})
    return Replay(4, capacity=200, chunksize=16, online=False,
                  sampler=sampler)
  replay = make()
  rng = np.random.default_rng(0)
  for i in range(3):
    add_steps(replay, 0, 50 * i, 50)
    batch = replay.sample(8)
    replay.prioritize(batch['stepid'], rng.exponential(size=(8, 4)))
  restored = make()
  restored.load(roundtrip(replay.save()))
  for _ in range(3):
    np.testing.assert_array_equal(replay.sample(8)['stepid'],
                                  restored.sample(8)['stepid'])


def test_threaded_insert_sample_prioritize():
  sampler = Mixture(
      {'priority': Prioritized(initial='meanstd', zero_on_sample=True,
                               seed=0),
       'recency': Recency(0.5, 1)},
      {'priority': 0.75, 'recency': 0.25})
  replay = Replay(8, capacity=400, chunksize=32, online=True, sampler=sampler)
  add_steps(replay, 0, 0, 40)
  errors, done, updates = [], threading.Event(), [0]

  def learner():
    rng = np.random.default_rng(0)
    try:
      while not done.is_set():
        batch = replay.sample(16)
        replay.prioritize(batch['stepid'][:, 1:], rng.exponential(
            size=(16, 7)))
        updates[0] += 1
    except Exception as e:  # Reported in the main thread.
      errors.append(e)

  thread = threading.Thread(target=learner)
  thread.start()
  try:
    for i in range(3):
      add_steps(replay, i % 2, 40 + 1000 * i, 1000)
  finally:
    done.set()
    thread.join()
  assert not errors, errors
  assert updates[0] > 0 and replay.stats()['replay/evictions'] > 0
  prio = sampler.samplers['priority']
  tree = prio._tree
  tree.check()
  assert tree.total == pytest.approx(tree.leaves.sum(), rel=1e-12)
  items = set(replay.item_ids().tolist())
  assert set(prio.save()['ids'].tolist()) == items
  assert set(sampler.samplers['recency'].save()['ids'].tolist()) == items
  # Only live items carry weight.
  assert not np.delete(tree.leaves, list(items)).any()


@pytest.mark.parametrize('kind', ['uniform', 'priority', 'inf', 'recency',
                                  'mixture'])
def test_report_draws_leave_the_train_draws_unchanged(kind):
  """commit=False draws (report batches, taken at wall-clock times) come
  from a stream of their own: the committed draws are the same with or
  without them in between, and the report draws still follow the
  sampler's distribution (not a copy of the next train draw)."""
  def make():
    return {
        'uniform': lambda: Uniform(seed=3),
        'priority': lambda: Prioritized(initial=1.0, seed=3),
        'inf': lambda: Prioritized(initial='inf', seed=3),
        'recency': lambda: Recency(1.0, seed=3),
        'mixture': lambda: Mixture(
            {'uniform': Uniform(seed=3), 'priority': Prioritized(seed=4),
             'recency': Recency(seed=5)},
            {'uniform': 0.5, 'priority': 0.3, 'recency': 0.2}),
    }[kind]()
  plain, peeked = make(), make()
  rng = np.random.default_rng(0)
  got = {'plain': [], 'peeked': []}
  for step in range(20):
    ids = np.arange(step * 10, step * 10 + 10)
    values = rng.uniform(0, 2, (10, 3))
    for name, sampler in (('plain', plain), ('peeked', peeked)):
      sampler.insert(ids)
      sampler.prioritize(ids, values)
      if name == 'peeked':
        peek = sampler.sample(8, commit=False)
        assert len(peek) == 8
      got[name].append(sampler.sample(8))
  for a, b in zip(got['plain'], got['peeked']):
    np.testing.assert_array_equal(a, b)
  # Peeks are draws of their own, not the next committed draw.
  assert not np.array_equal(peeked.sample(64, commit=False),
                            plain.sample(64))
