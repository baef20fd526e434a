"""Trie structure: the depth-first forest, the packer's micro-batches and parts, the tree attention masks."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from trainflow_trainer.attention import DenseMask
from trainflow_trainer.trie import Trajectory, build_forest
from trainflow_trainer.trie.attention import DenseTreeMask, SegmentTreeMask, segments_from_parents
from trainflow_trainer.trie.builder import tree_mask
from trainflow_trainer.trie.packer import loss_entries, pack


def random_seqs(rng: np.random.Generator, n: int, max_len: int, vocab: int = 5) -> list[list[int]]:
    seqs: list[list[int]] = []
    for _ in range(n):
        prefix = []
        if seqs and rng.random() < 0.7:
            base = seqs[rng.integers(len(seqs))]
            prefix = base[: rng.integers(0, len(base) + 1)]
        ext = int(rng.integers(0 if len(prefix) >= 2 else 2 - len(prefix), max_len + 1))
        seqs.append(prefix + rng.integers(0, vocab, ext).tolist())
    return seqs


def ancestor_or_self(parent: np.ndarray) -> np.ndarray:
    """[N, N] bool from parent pointers alone: rel[i, j] iff j is i or an ancestor of i."""
    n = len(parent)
    rel = np.zeros((n, n), dtype=bool)
    for i in range(n):
        j = i
        while j >= 0:
            rel[i, j] = True
            j = parent[j]
    return rel


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), n=st.integers(1, 12), max_len=st.integers(2, 15))
def test_forest_serialisation(seed, n, max_len):
    rng = np.random.default_rng(seed)
    seqs = random_seqs(rng, n, max_len)
    f = build_forest([Trajectory(s) for s in seqs])
    # Every branch is recovered through its index map; positions are depths; each step goes parent → child.
    for s, ix in zip(seqs, f.branch_index):
        assert f.tokens[ix].tolist() == s
        assert f.depth[ix].tolist() == list(range(len(s)))
        assert f.parent[ix[0]] == -1 and (f.parent[ix[1:]] == ix[:-1]).all()
    # One node per distinct prefix: the trie stores each unique prefix exactly once.
    assert f.unique_tokens == len({tuple(s[: k + 1]) for s in seqs for k in range(len(s))})
    assert f.total_tokens == sum(len(s) for s in seqs)
    # Depth-first: parents precede children, subtrees are contiguous, trees tile the forest.
    assert (f.parent < np.arange(f.unique_tokens)).all()
    assert [s for s, _ in f.trees] == [0] + [e for _, e in f.trees[:-1]] and f.trees[-1][1] == f.unique_tokens
    # The tree mask j ≤ i < subtree_end(j) is exactly "j is i or an ancestor of i".
    assert (tree_mask(f.subtree_end) == ancestor_or_self(f.parent)).all()


def test_no_sharing_gives_chains():
    seqs = [[1, 2, 3], [2, 2, 3], [3, 2, 3, 4]]
    f = build_forest([Trajectory(s) for s in seqs])
    assert f.unique_tokens == f.total_tokens and len(f.trees) == 3
    f2 = build_forest([Trajectory(s) for s in [[1, 2, 3], [1, 2, 4]]], share_prefixes=False)
    assert f2.unique_tokens == 6 and len(f2.trees) == 2


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), n=st.integers(1, 12), max_len=st.integers(2, 15), slack=st.integers(0, 20))
def test_packer_parts_and_ownership(seed, n, max_len, slack):
    rng = np.random.default_rng(seed)
    seqs = random_seqs(rng, n, max_len)
    trajs = [Trajectory(s, loss_mask=np.r_[0, rng.integers(0, 2, len(s) - 1)]) for s in seqs]
    f = build_forest(trajs)
    entries = loss_entries(f)
    budget = max(len(s) for s in seqs) + slack
    batches = pack(f, budget, entries=entries)
    owned = np.concatenate([mb.entries.index for mb in batches])
    assert sorted(owned.tolist()) == list(range(len(entries)))  # every loss entry counted exactly once
    covered = set()
    for mb in batches:
        assert len(mb) <= budget
        # Local structure is a valid forest serialisation and its mask is the ancestor relation.
        assert (mb.parent < np.arange(len(mb))).all()
        assert (tree_mask(mb.subtree_end) == ancestor_or_self(mb.parent)).all()
        # Packed tokens carry the forest's tokens/positions, and every local parent is the forest parent.
        assert (mb.input_ids == f.tokens[mb.nodes]).all() and (mb.position_ids == f.depth[mb.nodes]).all()
        has_parent = mb.parent >= 0
        assert (mb.nodes[mb.parent[has_parent]] == f.parent[mb.nodes[has_parent]]).all()
        assert (f.parent[mb.nodes[~has_parent]] == -1).all()  # roots are real roots: full root paths
        # Each entry's row predicts its target from the right node.
        e = mb.entries
        assert (mb.nodes[e.row] == entries.row[e.index]).all()
        assert (np.diff(e.index) > 0).all()  # (branch, position) order kept
        covered.update(mb.nodes.tolist())
    assert covered == set(range(f.unique_tokens))


def test_tree_larger_than_budget_is_split_with_root_path():
    f = build_forest([Trajectory([1, 2, 3, 4, 5]), Trajectory([1, 2, 3, 6, 7]), Trajectory([1, 2, 8, 9])])
    batches = pack(f, 6)
    assert len(batches) >= 2 and all(len(mb) <= 6 for mb in batches)
    assert sum(len(mb) for mb in batches) > f.unique_tokens  # root path tokens recomputed
    with pytest.raises(ValueError, match="deeper than packing.max_tokens"):
        pack(f, 4)


def test_split_cuts_where_the_root_path_is_shortest():
    """Two 40-token branches under a 20-token prompt, budget 70: the cut goes between the branches (the next
    part recomputes just the prompt), not at the fullest point inside branch one (which would also recompute
    10 tokens of that branch's history)."""
    prompt = list(range(10, 30))
    f = build_forest([Trajectory(prompt + list(range(100, 140))), Trajectory(prompt + list(range(200, 240)))])
    batches = pack(f, 70)
    assert len(batches) == 2 and all(len(mb) <= 70 for mb in batches)
    assert sum(len(mb) for mb in batches) == f.unique_tokens + len(prompt)


def test_ffd_keeps_trees_apart():
    f = build_forest([Trajectory([1, 2, 3]), Trajectory([2, 3]), Trajectory([3, 4, 5, 6]), Trajectory([1, 2, 4])])
    (mb,) = pack(f, 100)
    allowed = tree_mask(mb.subtree_end)
    tree_of = np.zeros(len(mb), int)
    for t, (s, e) in enumerate(f.trees):
        tree_of[(mb.nodes >= s) & (mb.nodes < e)] = t
    assert not (allowed & (tree_of[:, None] != tree_of[None, :])).any()


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), n=st.integers(1, 10), max_len=st.integers(2, 20), gqa=st.booleans())
def test_segment_attention_equals_dense(seed, n, max_len, gqa):
    """The training path (one SDPA per segment over gathered ancestors) equals the dense tree mask, values
    and gradients, on packed micro-batches (including partitioned ones)."""
    rng = np.random.default_rng(seed)
    f = build_forest([Trajectory(s) for s in random_seqs(rng, n, max_len)])
    budget = max(e - s for s, e in f.trees) // 2 + max_len + 1
    for mb in pack(f, budget):
        segs = segments_from_parents(mb.parent)
        # segments tile the micro-batch; inside one, each token is the child of the one before
        assert [a for a, _, _ in segs] == [0] + [b for _, b, _ in segs[:-1]] and segs[-1][1] == len(mb)
        torch.manual_seed(seed % 1000)
        T, hq, hkv = len(mb), 4, (2 if gqa else 4)
        q = torch.randn(1, hq, T, 8, dtype=torch.float64, requires_grad=True)
        k = torch.randn(1, hkv, T, 8, dtype=torch.float64, requires_grad=True)
        v = torch.randn(1, hkv, T, 8, dtype=torch.float64, requires_grad=True)
        g = torch.randn(1, hq, T, 8, dtype=torch.float64)
        got = SegmentTreeMask(mb.parent).attend(q, k, v, 0.35)
        want = DenseTreeMask(mb.subtree_end).attend(q, k, v, 0.35)
        also = DenseMask(torch.as_tensor(ancestor_or_self(mb.parent))[None]).attend(q, k, v, 0.35)
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(also, want, rtol=1e-12, atol=1e-12)
        g_got = torch.autograd.grad(got, (q, k, v), g)
        g_want = torch.autograd.grad(want, (q, k, v), g)
        for a, b in zip(g_got, g_want):
            torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def test_segment_attention_with_gathered_rows_and_keys() -> None:
    """An ancestor group whose query rows are not contiguous (siblings 5-6 and 8 around 7) and one whose
    ancestor keys are not (0-1 and 5): the merge writes back through an index, not a slice. Inputs in the
    model's layout (q/k/v transposed views of [B, T, H, D]), float64, values and gradients against dense."""
    seqs = [[0, 1, 2, 3, 4], [0, 1, 5, 6], [0, 1, 5, 7], [0, 1, 8]]
    mb = pack(build_forest([Trajectory(s) for s in seqs]), 64)[0]
    plan = SegmentTreeMask(mb.parent)
    assert any(isinstance(rows, torch.Tensor) for rows, _ in plan.groups)
    assert any(isinstance(keys, torch.Tensor) for _, keys in plan.groups)
    torch.manual_seed(0)
    T = len(mb)
    q = torch.randn(1, T, 4, 8, dtype=torch.float64).transpose(1, 2).requires_grad_()
    k = torch.randn(1, T, 2, 8, dtype=torch.float64).transpose(1, 2).requires_grad_()
    v = torch.randn(1, T, 2, 8, dtype=torch.float64).transpose(1, 2).requires_grad_()
    g = torch.randn(1, 4, T, 8, dtype=torch.float64)
    got = plan.attend(q, k, v, 0.35)
    want = DenseTreeMask(mb.subtree_end).attend(q, k, v, 0.35)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    for a, b in zip(torch.autograd.grad(got, (q, k, v), g), torch.autograd.grad(want, (q, k, v), g)):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def test_bad_input_is_named():
    with pytest.raises(ValueError, match=r"trajectory 1: loss_mask has shape"):
        build_forest([Trajectory([1, 2]), Trajectory([1, 2, 3], loss_mask=[0, 1])])
    with pytest.raises(ValueError, match=r"trajectory 0: loss_mask\[0\] must be 0"):
        build_forest([Trajectory([1, 2], loss_mask=[1, 1])])
    with pytest.raises(ValueError, match="trajectory 0: tokens must be a non-empty"):
        build_forest([Trajectory([])])
    with pytest.raises(ValueError, match="no trajectories"):
        build_forest([])
