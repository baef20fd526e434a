"""Packed micro-batches are dealt to ranks balanced by real token count (trie/distribute.py)."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from trainflow_trainer.trie import Trajectory, build_forest
from trainflow_trainer.trie.distribute import (
    assign_to_ranks,
    busiest_rank_load,
    pack_cost,
    pack_for_ranks,
    padded_count,
)
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


def layout(packs) -> list[list[int]]:
    """Which forest tokens each micro-batch holds, in order (root paths included)."""
    return [np.asarray(mb.nodes).tolist() for mb in packs]


def grpo_group(prompt: int, answers: list[int], seed: int = 0) -> list[Trajectory]:
    """One GRPO group: answers of the given lengths to one shared prompt (distinct first answer tokens)."""
    rng = np.random.default_rng(seed)
    head = rng.integers(0, 50, prompt).tolist()
    return [
        Trajectory(tokens=head + [100 + i] + rng.integers(0, 50, n - 1).tolist(), loss_mask=[0] * prompt + [1] * n)
        for i, n in enumerate(answers)
    ]


def test_one_tree_in_one_pack_is_cut_so_both_ranks_train():
    forest = build_forest(grpo_group(300, [40, 90, 60, 120, 80, 50, 70, 100]))
    whole = pack(forest, 4096)
    assert len(whole) == 1  # the group fits one micro-batch: a second rank would only run an empty pass
    split = pack_for_ranks(forest, 4096, 2)
    loads = [sum(pack_cost(split[i]) for i in ix) for ix in assign_to_ranks(split, 2)]
    assert min(loads) > 0
    # each extra part recomputes the 300-token prompt, yet the busiest rank carries far less than all of it
    assert busiest_rank_load(split, 2) < 0.75 * pack_cost(whole[0])
    assert sum(len(mb.entries) for mb in split) == len(whole[0].entries)  # every trained token once
    assert layout(pack_for_ranks(forest, 4096, 2)) == layout(split)  # deterministic: every rank agrees
    assert layout(pack_for_ranks(forest, 4096, 1)) == layout(whole)  # one process: the budget as configured


def test_balanced_packings_and_uncuttable_chains_are_left_as_they_are():
    forest = build_forest(grpo_group(20, [30, 30]) + grpo_group(20, [30, 30], seed=1))
    assert layout(pack_for_ranks(forest, 80, 2)) == layout(pack(forest, 80))
    chain = build_forest([Trajectory(tokens=list(range(200)))])
    assert len(pack_for_ranks(chain, 4096, 2)) == 1  # the last token needs the whole chain: rank 1 runs empty
