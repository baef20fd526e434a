"""Packed micro-batches are dealt to ranks balanced by real token count (trie/distribute.py)."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from trainflow_trainer.trie import Trajectory, build_forest
from trainflow_trainer.trie.distribute import assign_to_ranks, pack_cost, padded_count
from trainflow_trainer.trie.packer import pack


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(0, 500), max_size=30), st.integers(1, 5))
def test_every_pack_goes_to_exactly_one_rank_and_loads_are_balanced(costs, world):
    out = assign_to_ranks(costs, world)
    assert len(out) == world
    flat = sorted(i for ix in out for i in ix)
    assert flat == list(range(len(costs)))
    assert all(ix == sorted(ix) for ix in out)
    loads = [sum(costs[i] for i in ix) for ix in out]
    # LPT's guarantee: no rank exceeds the lightest by more than the largest single pack
    assert max(loads) - min(loads) <= max(costs, default=0)
    assert assign_to_ranks(costs, world) == out  # deterministic: every rank computes the same answer
    assert padded_count(out) == max(1, max(len(ix) for ix in out))


def test_costs_are_real_tokens_of_micro_batches():
    rng = np.random.default_rng(0)
    trajs = [Trajectory(tokens=rng.integers(0, 9, int(n)).tolist()) for n in rng.integers(3, 40, 12)]
    batches = pack(build_forest(trajs), 64, pad_multiple=16)
    assert all(len(mb) % 16 == 0 for mb in batches)
    costs = [pack_cost(mb) for mb in batches]
    assert sum(costs) < sum(len(mb) for mb in batches)  # padding is not counted
    out = assign_to_ranks(batches, 2)
    assert out == assign_to_ranks(costs, 2)
    assert sorted(out[0] + out[1]) == list(range(len(batches)))


def test_fewer_packs_than_ranks_leaves_ranks_empty_but_padded_to_one_pass():
    out = assign_to_ranks([10], 3)
    assert out == [[0], [], []]
    assert padded_count(out) == 1
    assert padded_count(assign_to_ranks([], 2)) == 1
