import errno
import pickle
import threading
import warnings

import numpy as np
import pytest

from embodied.core import replay_files
from embodied.core.checkpoint import CheckpointError
from embodied.core.replay import Replay
from embodied.core.samplers import Uniform
from tests.helpers import replay_step


def fill(replay, steps, workers=1, seed=0, counts=None):
  """Adds steps from several streams in random interleaving; returns counts."""
  rng = np.random.default_rng(seed)
  counts = counts if counts is not None else {w: 0 for w in range(workers)}
  for worker in rng.integers(0, workers, steps):
    worker = int(worker)
    replay.add(replay_step(worker, counts[worker]), worker)
    counts[worker] += 1
  return counts


def windows(batch):
  """Identifies each sampled sequence by (worker, first t)."""
  return {(int(w[0]), int(t[0])) for w, t in zip(batch['w'], batch['t'])}


def check_consecutive(batch, length):
  t, w = batch['t'], batch['w']
  assert t.shape == w.shape == batch['stepid'].shape
  assert t.shape[1] == length
  assert (np.diff(t, axis=1) == 1).all(), t
  assert (w == w[:, :1]).all(), w
  assert (batch['image'] == (t % 256)[..., None, None]).all()


def reference_windows(counts, length, first=None):
  first = first or {}
  return {(w, t0) for w, n in counts.items()
          for t0 in range(first.get(w, 0), n - length + 1)}


def sample_all(replay, draws=20000, batch=500):
  found = set()
  for _ in range(draws // batch):
    found |= windows(replay.sample(batch))
  return found


def distinct_steps(found, length):
  """Every stored step lies in some item window once streams have length steps."""
  return {(w, t0 + i) for w, t0 in found for i in range(length)}


def test_chunksize_must_exceed_length():
  with pytest.raises(ValueError, match='chunksize'):
    Replay(length=8, capacity=100, chunksize=8)


def test_sampling_too_early_fails_clearly():
  replay = Replay(length=4, capacity=100, chunksize=8)
  fill(replay, 3)
  with pytest.raises(ValueError, match='sequence'):
    replay.sample(1)


def test_shapes_and_skipped_keys():
  replay = Replay(length=4, capacity=100, chunksize=8)
  fill(replay, 20)
  batch = replay.sample(3)
  assert set(batch) == {'t', 'w', 'image', 'stepid'}
  assert batch['image'].shape == (3, 4, 2, 3)
  assert batch['image'].dtype == np.uint8
  assert batch['stepid'].dtype == np.int64
  check_consecutive(batch, 4)


def test_sequences_never_cross_streams_or_chunks():
  length = 5
  replay = Replay(length, capacity=10000, chunksize=8)
  fill(replay, 900, workers=3)
  for _ in range(20):
    check_consecutive(replay.sample(100), length)


@pytest.mark.parametrize('chunksize', [5, 7, 16, 1000])
def test_every_window_is_one_item(chunksize):
  length = 4
  replay = Replay(length, capacity=10000, chunksize=chunksize)
  counts = fill(replay, 300, workers=3, seed=1)
  expected = reference_windows(counts, length)
  assert len(replay.sampler) == len(expected)
  assert replay.stats()['replay/items'] == len(expected)
  assert len(replay) == 300
  assert sample_all(replay) == expected


def test_items_appear_with_their_last_step():
  length = 3
  replay = Replay(length, capacity=1000, chunksize=4)
  for t in range(20):
    replay.add(replay_step(0, t))
    assert len(replay.sampler) == max(0, t + 1 - length + 1)
    if t + 1 >= length:
      assert max(replay.sample(200)['t'][:, -1]) == t


def test_capacity_eviction_keeps_recent_data():
  length, chunksize, capacity = 4, 16, 64
  replay = Replay(length, capacity, chunksize)
  counts = fill(replay, 2000, workers=2, seed=2)
  stats = replay.stats()
  assert stats['replay/evictions'] > 0
  assert len(replay) <= capacity
  assert len(replay.sampler) <= replay.num_slots * (chunksize - length + 1)
  batch = replay.sample(2000)
  check_consecutive(batch, length)
  for w, n in counts.items():
    ts = batch['t'][batch['w'][:, 0] == w]
    assert ts.min() >= n - capacity  # Nothing older than the buffer.
  # Exactly the windows of the surviving chunks are items, and the size
  # counts steps shared by consecutive chunks once.
  found = sample_all(replay)
  assert len(found) == len(replay.sampler)
  assert len(replay) == len(distinct_steps(found, length))


def test_eviction_refuses_to_take_open_chunks():
  replay = Replay(length=2, capacity=8, chunksize=4)  # 2 slots
  fill(replay, 100, workers=1)  # One stream keeps rotating fine.
  replay.add(replay_step(1, 0), worker=1)  # Second stream takes the other slot.
  with pytest.raises(RuntimeError, match='capacity'):
    for t in range(100):
      replay.add(replay_step(0, 100 + t), worker=0)


def test_online_queue_trains_on_every_step():
  length = 4
  replay = Replay(length, capacity=10000, chunksize=16, online=True)
  counts = {0: 0, 1: 0}
  seen = {0: set(), 1: set()}
  def record(batch):
    check_consecutive(batch, length)
    for w, t in zip(batch['w'][:, 0], batch['t']):
      seen[int(w)].update(t.tolist())
  for round_ in range(100):
    fill(replay, 8, workers=2, seed=round_, counts=counts)
    if len(replay.sampler):
      record(replay.sample(4))
  while replay.stats()['replay/online_queue']:
    record(replay.sample(4))
  for w, n in counts.items():
    covered = set(range(n - n % length))
    assert covered <= seen[w]


def test_online_queue_drops_evicted_items():
  length = 4
  replay = Replay(length, capacity=64, chunksize=16, online=True)
  fill(replay, 1000, workers=2)
  queued = replay.stats()['replay/online_queue']
  assert 0 < queued <= len(replay.sampler)
  batch = replay.sample(queued)
  check_consecutive(batch, length)


def test_update_writes_back_latents():
  length = 4
  replay = Replay(length, capacity=10000, chunksize=8)
  fill(replay, 200, workers=2)
  written = {}
  for _ in range(5):
    batch = replay.sample(8)
    stepid = batch['stepid']
    deter = np.stack([stepid, -stepid], -1).astype(np.float32) + 0.5
    replay.update(stepid, {'deter': deter})
    written.update({int(s): 1 for s in stepid.reshape(-1)})
  batch = replay.sample(500)
  assert batch['deter'].shape == (500, length, 2)
  for sid, value in zip(batch['stepid'].reshape(-1),
                        batch['deter'].reshape(-1, 2)):
    if int(sid) in written:
      assert value.tolist() == [sid + 0.5, -sid + 0.5]
    else:
      assert value.tolist() == [0, 0]
  # New steps added later get zeros for the latent key.
  fill(replay, 50, workers=2, seed=9, counts={0: 1000, 1: 1000})
  batch = replay.sample(500)
  fresh = batch['t'] >= 1000
  assert fresh.any()
  assert (batch['deter'][fresh] == 0).all()


def test_update_ignores_steps_not_stored():
  replay = Replay(4, capacity=1000, chunksize=8)
  fill(replay, 6)  # Slot 0 holds positions 0..5.
  stepid = np.array([[5, 6, 7, 9]])  # Stored, unwritten, unwritten, no slot.
  replay.update(stepid, {'deter': np.ones((1, 4), np.float32)})
  fill(replay, 10, counts={0: 6})
  batch = replay.sample(500)
  deter = dict(zip(batch['stepid'].reshape(-1), batch['deter'].reshape(-1)))
  assert deter[5] == 1
  assert deter[6] == deter[7] == deter[9] == 0


def test_update_overwrites_existing_key():
  replay = Replay(4, capacity=1000, chunksize=8)
  fill(replay, 30)
  batch = replay.sample(2)
  replay.update(batch['stepid'], {'t': -batch['t']})
  again = replay.sample(500)
  hit = np.isin(again['stepid'], batch['stepid'])
  assert hit.any()
  assert (again['t'][hit] < 0).all()


def test_evicted_slots_reset_latents():
  replay = Replay(4, capacity=32, chunksize=8)
  fill(replay, 30)
  batch = replay.sample(50)
  replay.update(batch['stepid'], {'deter': np.ones((50, 4), np.float32)})
  fill(replay, 200, counts={0: 30})
  batch = replay.sample(500)
  assert batch['t'].min() >= 30 + 200 - 32
  # Steps written after the update never got latents.
  assert (batch['deter'] == 0).all()


def roundtrip(data):
  return pickle.loads(pickle.dumps(data))


@pytest.mark.parametrize('use_dir', [False, True])
def test_save_load_restores_same_buffer(tmp_path, use_dir):
  directory = tmp_path / 'replay' if use_dir else None
  kwargs = dict(length=5, capacity=200, chunksize=16, online=True)
  replay = Replay(**kwargs, directory=directory)
  counts = fill(replay, 500, workers=3)
  replay.sample(7)
  replay.update(replay.sample(3)['stepid'], {'deter': np.ones((3, 5, 2))})
  data = roundtrip(replay.save())
  if use_dir:
    # Completed chunks are referenced by name, not pickled.
    assert any(info['name'] for info in data['slots'].values())
    assert all('data' not in info for info in data['slots'].values()
               if info['name'])
  restored = Replay(**kwargs, directory=directory)
  restored.load(data)
  assert len(restored) == len(replay)
  # Sample timing and age are since the last stats() call, not persisted.
  timing = ('replay/sample_ms', 'replay/sample_age')
  counters = lambda r: {
      k: v for k, v in r.stats().items() if k not in timing}
  assert counters(restored) == counters(replay)
  # Same items, sampler state, and online queue: identical batches.
  for _ in range(3):
    a, b = replay.sample(64), restored.sample(64)
    assert a.keys() == b.keys()
    for key in a:
      if key != 'deter' or not use_dir:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)
  # Both continue identically.
  fill(replay, 100, workers=3, seed=5, counts=dict(counts))
  fill(restored, 100, workers=3, seed=5, counts=dict(counts))
  assert len(restored) == len(replay)
  assert sample_all(restored) == sample_all(replay)


@pytest.mark.parametrize('use_dir', [False, True])
def test_repeated_save_load_does_not_duplicate(tmp_path, use_dir):
  directory = tmp_path / 'replay' if use_dir else None
  kwargs = dict(length=4, capacity=10000, chunksize=8)
  replay = Replay(**kwargs, directory=directory)
  counts = fill(replay, 300, workers=2)
  for _ in range(4):
    fresh = Replay(**kwargs, directory=directory)
    fresh.load(roundtrip(replay.save()))
    replay = fresh
  expected = reference_windows(counts, 4)
  assert len(replay) == 300
  assert len(replay.sampler) == len(expected)
  assert sample_all(replay) == expected
  if use_dir:
    files = list((tmp_path / 'replay').glob('*.npz'))
    named = [i['name'] for i in replay.save()['slots'].values() if i['name']]
    assert sorted(f.name for f in files) == sorted(named)
  counts = fill(replay, 100, workers=2, seed=3, counts=counts)
  assert sample_all(replay) == reference_windows(counts, 4)


def test_checkpoint_without_directory_moves_to_files(tmp_path):
  kwargs = dict(length=4, capacity=1000, chunksize=8)
  replay = Replay(**kwargs)
  counts = fill(replay, 100, workers=2)
  resumed = Replay(**kwargs, directory=tmp_path / 'replay')
  resumed.load(roundtrip(replay.save()))
  data = resumed.save()
  full = [i for i in data['slots'].values() if i['fill'] == 8]
  assert full and all(i['name'] and 'data' not in i for i in full)
  again = Replay(**kwargs, directory=tmp_path / 'replay')
  again.load(roundtrip(data))
  assert sample_all(again) == reference_windows(counts, 4)


def test_load_of_older_save_after_evictions(tmp_path):
  directory = tmp_path / 'replay'
  kwargs = dict(length=4, capacity=64, chunksize=16, online=True)
  replay = Replay(**kwargs, directory=directory)
  counts = fill(replay, 100, workers=2)
  old = roundtrip(replay.save())
  fill(replay, 500, workers=2, seed=1, counts=counts)
  # A newer checkpoint is complete: files only the old save named go.
  replay.save()
  replay.committed()
  resumed = Replay(**kwargs, directory=directory)
  with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter('always')
    resumed.load(old)
  assert any('missing' in str(w.message) for w in caught)
  assert not any('sampler holds' in str(w.message) for w in caught)
  found = sample_all(resumed)
  assert len(resumed.sampler) == len(found)
  assert len(resumed) == len(distinct_steps(found, 4))
  check_consecutive(resumed.sample(100), 4)
  fill(resumed, 300, workers=2, seed=2, counts={0: 10000, 1: 10000})
  check_consecutive(resumed.sample(300), 4)
  assert len(resumed) <= 64


def chunk_files(directory, pattern='*.npz'):
  return sorted(path.name for path in directory.glob(pattern))


def named_files(data):
  return sorted(i['name'] for i in data['slots'].values() if i['name'])


def test_evicted_files_stay_until_a_newer_checkpoint(tmp_path):
  directory = tmp_path / 'replay'
  kwargs = dict(length=4, capacity=64, chunksize=16)
  replay = Replay(**kwargs, directory=directory)
  counts = fill(replay, 100, workers=2)
  old = roundtrip(replay.save())
  expected = sample_all(replay)
  # Evicts every chunk of the old save, as a run does after a checkpoint
  # before it is killed.
  fill(replay, 500, workers=2, seed=1, counts=counts)
  assert set(named_files(old)) <= set(chunk_files(directory))
  resumed = Replay(**kwargs, directory=directory)
  with warnings.catch_warnings():
    warnings.simplefilter('error')
    resumed.load(old)
  assert sample_all(resumed) == expected
  # Once a newer save is committed, only its files and live chunks remain;
  # a file a killed run wrote after its last checkpoint goes too.
  (directory / f'{"0" * 32}-16.npz').write_bytes(b'orphan')
  new = replay.save()
  replay.committed()
  assert chunk_files(directory) == named_files(new)


def test_partial_writes_are_removed_on_start(tmp_path):
  """A kill mid-write leaves NAME.tmp, complete or truncated: the next
  replay on the directory deletes both and loads the checkpoint fully."""
  directory = tmp_path / 'replay'
  kwargs = dict(length=4, capacity=1000, chunksize=8)
  replay = Replay(**kwargs, directory=directory)
  counts = fill(replay, 100, workers=2)
  data = roundtrip(replay.save())
  content = (directory / named_files(data)[0]).read_bytes()
  (directory / f'{"a" * 32}-8.npz.tmp').write_bytes(content)
  (directory / f'{"b" * 32}-8.npz.tmp').write_bytes(
      content[:len(content) // 2])
  resumed = Replay(**kwargs, directory=directory)
  assert chunk_files(directory, '*.tmp') == []
  assert chunk_files(directory) == named_files(data)
  with warnings.catch_warnings():
    warnings.simplefilter('error')
    resumed.load(data)
  assert sample_all(resumed) == reference_windows(counts, 4)


def test_unreadable_chunk_file_is_skipped(tmp_path):
  directory = tmp_path / 'replay'
  kwargs = dict(length=4, capacity=1000, chunksize=8)
  replay = Replay(**kwargs, directory=directory)
  fill(replay, 100, workers=2)
  data = roundtrip(replay.save())
  names = named_files(data)
  path = directory / names[0]
  path.write_bytes(path.read_bytes()[:100])  # A disk fault.
  resumed = Replay(**kwargs, directory=directory)
  with pytest.warns(UserWarning, match='unreadable or truncated'):
    resumed.load(data)
  assert len(resumed.sampler) == len(replay.sampler) - (8 - 4 + 1)
  check_consecutive(resumed.sample(200), 4)


def test_failed_chunk_write_keeps_data_and_raises(tmp_path, monkeypatch):
  directory = tmp_path / 'replay'
  kwargs = dict(length=4, capacity=1000, chunksize=8)
  replay = Replay(**kwargs, directory=directory)
  write = replay_files.write_npz

  def full_disk(path, arrays):
    with open(str(path), 'wb') as f:
      f.write(b'partial')
    raise OSError(errno.ENOSPC, 'No space left on device', str(path))
  monkeypatch.setattr(replay_files, 'write_npz', full_disk)
  fill(replay, 7)
  with pytest.raises(CheckpointError) as info:
    replay.add(replay_step(0, 7))  # Completes the first chunk.
  error = info.value
  assert isinstance(error, OSError) and error.errno == errno.ENOSPC
  assert str(error) == (
      f'Could not write replay chunk to {directory}: No space left on '
      'device; the chunk stays in memory and the last complete checkpoint '
      'is kept')
  assert list(directory.glob('*')) == []
  # Nothing is lost: the chunk is sampled and pickled into saves.
  assert len(replay) == 8
  check_consecutive(replay.sample(10), 4)
  data = roundtrip(replay.save())
  assert [bool(i['name']) for i in data['slots'].values()] == [False]
  # With space again, training goes on and a resume has every step.
  monkeypatch.setattr(replay_files, 'write_npz', write)
  fill(replay, 20, counts={0: 8})
  written = chunk_files(directory)
  assert written and written == named_files(replay.save())
  resumed = Replay(**kwargs, directory=directory)
  resumed.load(data)
  assert sample_all(resumed) == reference_windows({0: 8}, 4)
  # The chunk pickled in the save got its file.
  assert len(chunk_files(directory)) == len(written) + 1


def test_unwritable_directory_fails_clearly(tmp_path):
  blocker = tmp_path / 'file'
  blocker.write_text('')
  with pytest.raises(CheckpointError, match=(
      f'Could not create replay directory {blocker}/replay: ')):
    Replay(4, capacity=100, chunksize=8, directory=blocker / 'replay')


def test_checkpoint_integration(tmp_path):
  import elements
  replay = Replay(4, capacity=1000, chunksize=8, directory=tmp_path / 'r')
  counts = fill(replay, 100, workers=2)
  cp = elements.Checkpoint(tmp_path / 'ckpt')
  cp.replay = replay
  cp.save()
  resumed = Replay(4, capacity=1000, chunksize=8, directory=tmp_path / 'r')
  cp = elements.Checkpoint(tmp_path / 'ckpt')
  cp.replay = resumed
  cp.load()
  assert sample_all(resumed) == reference_windows(counts, 4)


def test_prioritize_reaches_sampler():
  calls = []
  class Recording(Uniform):
    def prioritize(self, itemids, values):
      calls.append((itemids, values))
  replay = Replay(4, capacity=1000, chunksize=8, sampler=Recording(0))
  fill(replay, 50)
  stepid = replay.sample(3)['stepid']
  # The trained steps exclude a replay context of one step.
  values = np.arange(9.0).reshape(3, 3)
  replay.prioritize(stepid[:, 1:], values)
  assert len(calls) == 1
  np.testing.assert_array_equal(calls[0][0], stepid[:, 0])
  np.testing.assert_array_equal(calls[0][1], values)


def test_concurrent_add_and_sample():
  length = 4
  replay = Replay(length, capacity=128, chunksize=16, online=True)
  fill(replay, 20)
  errors = []
  sampled = [0]
  done = threading.Event()
  def learner():
    try:
      while not done.is_set():
        batch = replay.sample(16)
        check_consecutive(batch, length)
        replay.update(batch['stepid'], {'deter': np.zeros((16, length))})
        sampled[0] += 16
    except Exception as e:  # Reported in the main thread.
      errors.append(e)
  thread = threading.Thread(target=learner)
  thread.start()
  try:
    counts = fill(replay, 6000, workers=3, seed=4, counts={0: 20, 1: 0, 2: 0})
  finally:
    done.set()
    thread.join()
  assert not errors, errors
  stats = replay.stats()
  assert stats['replay/inserts'] == 6020
  assert stats['replay/samples'] == sampled[0] > 0
  assert len(replay) <= 128
  assert sum(counts.values()) == 6020


def test_uniform_frequencies():
  sampler = Uniform(seed=3)
  sampler.insert(np.arange(100) * 7)
  draws = sampler.sample(100000)
  assert set(draws.tolist()) <= set((np.arange(100) * 7).tolist())
  counts = np.bincount(draws // 7, minlength=100)
  expected = 1000
  chi2 = ((counts - expected) ** 2 / expected).sum()
  assert chi2 < 99 + 5 * np.sqrt(2 * 99)  # 99 degrees of freedom.


def test_uniform_matches_python_set():
  rng = np.random.default_rng(0)
  sampler = Uniform(seed=0)
  reference = set()
  for _ in range(500):
    if reference and rng.random() < 0.45:
      k = rng.integers(1, min(len(reference), 20) + 1)
      ids = rng.choice(sorted(reference), k, replace=False)
      sampler.remove(ids)
      reference -= set(ids.tolist())
    else:
      candidates = np.setdiff1d(np.arange(2000), list(reference))
      ids = rng.choice(candidates, rng.integers(1, 20), replace=False)
      sampler.insert(ids)
      reference |= set(ids.tolist())
    assert len(sampler) == len(reference)
    assert set(sampler.save()['keys'].tolist()) == reference
    if reference:
      assert set(sampler.sample(50).tolist()) <= reference


def test_uniform_errors_and_persistence():
  sampler = Uniform(seed=1)
  with pytest.raises(ValueError, match='empty'):
    sampler.sample(1)
  sampler.insert([1, 2, 3])
  with pytest.raises(KeyError):
    sampler.insert([2])
  with pytest.raises(KeyError):
    sampler.remove([4])
  with pytest.raises(KeyError):
    sampler.insert([5, 5])
  assert len(sampler) == 3
  sampler.insert([5])
  sampler.remove([5])
  other = Uniform(seed=99)
  other.load(roundtrip(sampler.save()))
  np.testing.assert_array_equal(sampler.sample(20), other.sample(20))


def test_storage_grows_with_data_not_capacity():
  # 5e6 steps of 64x64x3 images would be ~57 GiB if reserved up front.
  rep = Replay(length=5, capacity=5e6, chunksize=16)
  for t in range(40):
    rep.add({'image': np.full((64, 64, 3), t % 255, np.uint8),
             'is_first': np.bool_(t == 0)}, worker=0)
  allocated = rep._data['image'].shape[0]
  assert allocated < 16, allocated
  batch = rep.sample(4)
  # Windows are consecutive frames, also across the grown storage.
  frames = batch['image'][:, :, 0, 0, 0].astype(int)
  assert (np.diff(frames, axis=1) == 1).all()
