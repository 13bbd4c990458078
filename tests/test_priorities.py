"""Buffer-wide priority refresh (dreamerv3/priority.py): every item gets
the aggregate of its own steps' signals, from one model pass per window."""

import numpy as np

from embodied.core import Prioritized, Replay
from dreamerv3.priority import PriorityRefresh


class StepAgent:
  """uncertainty() is a known function of each trained step's id, so the
  expected item priorities follow without running a model."""

  def __init__(self, context):
    self.context = context
    self.calls = []

  def uncertainty(self, data):
    self.calls.append(data['stepid'].shape)
    stepid = data['stepid'][:, self.context:]
    return (np.sin(stepid * 0.7) + 1.5).astype(np.float32)


def test_refresh_sets_every_item_from_its_steps():
  length, context, chunksize, batch = 9, 1, 32, 4
  sampler = Prioritized(initial=1.0, exponent=1.0, maxfrac=0.3)
  replay = Replay(length, capacity=200, chunksize=chunksize, sampler=sampler)
  for worker in range(2):  # Two streams: chunks continue their predecessors.
    for t in range(70 + 13 * worker):
      replay.add({'x': np.float32(t), 'is_first': t == 0}, worker)
  agent = StepAgent(context)
  refresh = PriorityRefresh(agent, replay, batch, every=5, context=context)
  refresh(4)
  assert not agent.calls  # Only every 5 updates.
  refresh(5)
  ids = replay.item_ids()
  assert refresh.stats()['replay/cache_items'] == len(ids) > 100
  # The reference: each item's trained steps, aggregated by hand.
  T = length - context
  want = {}
  for item in ids:
    values = np.sin((item + context + np.arange(T)) * 0.7) + 1.5
    want[item] = 0.3 * values.max() + 0.7 * values.mean()
  got = {i: float(sampler._prio[i]) for i in ids}
  for item in ids:
    np.testing.assert_allclose(got[item], want[item], rtol=1e-6)
  assert sampler.stats()['prio_never_updated'] == 0
  # One pass per window of T steps, not one per item.
  windows = sum(-(-len(replay._slot_items(s)) // T) + 1
                for s in np.flatnonzero(replay._used))
  assert len(agent.calls) <= -(-windows // batch)
  assert all(shape == (batch, length) for shape in agent.calls)


class MemberAgent(StepAgent):
  """StepAgent over a member axis [N, B, T], with each member's own
  function of the step id (so a value landing in the wrong member shows)."""

  def uncertainty(self, data):
    self.calls.append(data['stepid'].shape)
    stepid = data['stepid'][:, :, self.context:]
    member = np.arange(len(stepid))[:, None, None]
    return (np.sin(stepid * 0.7 + member) + 1.5).astype(np.float32)


def test_members_refresh_each_replay_from_its_own_items():
  """Two members with different buffer sizes: one model call per batch for
  both; each member's priorities equal its own item-by-item reference."""
  from embodied.core import Stacked
  length, context, chunksize, batch = 9, 1, 32, 4
  samplers = [Prioritized(initial=1.0, exponent=1.0, maxfrac=0.3)
              for _ in range(2)]
  replays = [Replay(length, capacity=400, chunksize=chunksize, sampler=s)
             for s in samplers]
  for k, replay in enumerate(replays):
    for t in range(60 + 90 * k):
      replay.add({'x': np.float32(t), 'is_first': t == 0}, 0)
  agent = MemberAgent(context)
  refresh = PriorityRefresh(agent, Stacked(replays), batch, every=1,
                            context=context)
  refresh(1)
  T = length - context
  for k, (replay, sampler) in enumerate(zip(replays, samplers)):
    ids = replay.item_ids()
    assert len(ids) > 40
    for item in ids:
      values = np.sin((item + context + np.arange(T)) * 0.7 + k) + 1.5
      want = 0.3 * values.max() + 0.7 * values.mean()
      np.testing.assert_allclose(float(sampler._prio[item]), want, rtol=1e-6)
    assert sampler.stats()['prio_never_updated'] == 0
  assert all(shape == (2, batch, length) for shape in agent.calls)
  # As many calls as the larger member needs.
  windows = max(sum(-(-len(r._slot_items(s)) // T) + 1
                    for s in np.flatnonzero(r._used)) for r in replays)
  assert len(agent.calls) <= -(-windows // batch)
  assert refresh.stats()['replay/cache_items'] == sum(
      len(r.item_ids()) for r in replays)
