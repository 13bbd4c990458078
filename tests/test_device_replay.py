"""Replay on the accelerator (embodied/jax/replay.py) gives the host replay's
batches: same items, same values, through inserts, chunk turnover with
eviction, written-back values, priorities and a save/load round trip."""

import jax
import numpy as np

from embodied.core.replay import Replay
from embodied.core.samplers import Prioritized
from embodied.jax.replay import DeviceReplay


def step(rng, worker, t):
  return {'image': rng.integers(0, 2, (4, 4, 3)).astype(bool),
          'vector': rng.normal(size=5).astype(np.float32),
          'action': np.int32(rng.integers(0, 6)),
          'reward': np.float32(rng.normal()),
          'is_first': np.bool_(t == 0), 't': np.int32(t), 'w': np.int32(worker)}


def pair(**kwargs):
  make = lambda cls: cls(8, capacity=96, chunksize=16, online=True,
                         sampler=Prioritized(initial=1.0, seed=5), **kwargs)
  return make(Replay), make(DeviceReplay)


def add(replays, rng, steps, workers=3, counts=None):
  counts = counts if counts is not None else {}
  for worker in rng.integers(0, workers, steps):
    worker = int(worker)
    t = counts.get(worker, 0)
    tran = step(rng, worker, t)
    for r in replays:
      r.add(tran, worker)
    counts[worker] = t + 1
  return counts


def assert_same(host, device):
  assert set(host) == set(device)
  assert isinstance(device['stepid'], np.ndarray)
  for key in host:
    if key != 'stepid':
      assert isinstance(device[key], jax.Array), key
    np.testing.assert_array_equal(np.asarray(device[key]), host[key],
                                  err_msg=key)


def test_device_replay_gives_the_host_replays_batches():
  host, device = pair()
  rng = np.random.default_rng(0)
  counts = add((host, device), rng, 40)
  for i in range(30):  # Runs past the capacity: chunks get evicted.
    counts = add((host, device), rng, 7, counts=counts)
    a, b = host.sample(6), device.sample(6)
    assert_same(a, b)
    # The train step's write-back: latents and priorities.
    latent = rng.normal(size=(6, 8, 3)).astype(np.float16)
    for r in (host, device):
      r.update(a['stepid'], {'deter': latent})
      r.prioritize(a['stepid'][:, 1:], np.abs(latent[:, 1:, 0]) + 0.1)
    if i % 10 == 9:
      assert_same(host.sample(4, commit=False), device.sample(4, commit=False))
  assert host.stats()['replay/evictions'] > 10
  assert len(host) == len(device)


def test_device_replay_after_load_matches():
  host, device = pair()
  rng = np.random.default_rng(1)
  add((host, device), rng, 60)
  data = host.save()
  fresh_host, fresh_device = pair()
  fresh_host.load(data)
  fresh_device.load(data)
  for _ in range(5):
    assert_same(fresh_host.sample(5), fresh_device.sample(5))


def test_config_selects_the_device_replay():
  from dreamerv3 import main as dmain
  for device, cls in (('host', Replay), ('accelerator', DeviceReplay)):
    config = dmain.parse(['--configs', 'debug', '--replay.device', device])
    replay = dmain.make_replay(config, 'replay', directory=False)
    assert type(replay) is cls


def test_members_stack_their_device_batches_on_the_device():
  """The replays of a multi-seed run's members (Stacked): the device
  replays' stacked batch equals the host replays', born on the device."""
  from embodied.core.replay import Stacked
  pairs = [pair() for _ in range(3)]
  rng = np.random.default_rng(1)
  for k, members in enumerate(pairs):
    add(members, rng, 50 + 10 * k)
  host = Stacked([p[0] for p in pairs])
  device = Stacked([p[1] for p in pairs])
  for _ in range(3):
    a, b = host.sample(4), device.sample(4)
    assert a['image'].shape[:3] == (3, 4, 8)
    assert_same(a, b)
    # Written back per member along the leading axis, as on the host.
    latent = rng.normal(size=(3, 4, 8, 2)).astype(np.float16)
    host.update(a['stepid'], {'deter': latent})
    device.update(a['stepid'], {'deter': latent})
  assert_same(host.sample(4), device.sample(4))
