"""The member axis: one seed has no axis, N seeds a leading one, and the
rows of all members' envs map to members in order."""

import numpy as np
import pytest

from embodied.core.axis import MemberAxis


def test_one_seed_has_no_axis():
  axis = MemberAxis(seed=7)
  assert axis.seeds == [7] and axis.count == 1 and not axis.stacked
  tree = {'a': np.arange(6).reshape(2, 3), 'b': {'c': np.ones(4)}}
  assert axis.stack([tree]) is tree
  assert axis.split(tree)[0] is tree
  assert axis.to_members(tree['a']) is tree['a']
  assert axis.member_shape((2, 3)) == (2, 3)
  fn = lambda x: x + 1
  assert axis.map(fn, vmap=lambda f: pytest.fail('no map without axis')) is fn


def test_members_stack_and_split_by_seed():
  axis = MemberAxis([5, 9, 2])
  assert axis.seeds == [5, 9, 2] and axis.count == 3 and axis.stacked
  trees = [{'x': np.full((2,), k), 'nested': {'y': [np.float32(k)]}}
           for k in range(3)]
  stacked = axis.stack(trees)
  assert stacked['x'].shape == (3, 2)
  assert stacked['nested']['y'][0].tolist() == [0.0, 1.0, 2.0]
  for k, tree in enumerate(axis.split(stacked)):
    assert tree['x'].tolist() == [k, k]
    assert tree['nested']['y'][0] == k
  assert axis.member_shape((3, 4, 5)) == (4, 5)
  with pytest.raises(AssertionError):
    axis.stack(trees[:2])


def test_env_rows_belong_to_members_in_order():
  # The driver steps member k's env i in row k * E + i (run/members.py).
  axis, envs = MemberAxis([1, 2]), 3
  rows = np.array([[k, i] for k in range(2) for i in range(envs)])
  laid = axis.to_members(rows)
  assert laid.shape == (2, envs, 2)
  for k in range(2):
    for i in range(envs):
      assert laid[k, i].tolist() == [k, i]
  assert (axis.from_members(laid) == rows).all()


def test_a_list_of_one_seed_keeps_the_axis():
  axis = MemberAxis([4])
  assert axis.stacked and axis.count == 1
  assert axis.stack([np.zeros(2)]).shape == (1, 2)
  assert axis.map(lambda x: x, vmap=lambda f: 'mapped') == 'mapped'
