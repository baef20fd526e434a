"""Forest → micro-batches of at most `max_tokens` packed tokens, plus the loss entries each one owns.

Packing unit: a whole tree. Trees go into micro-batches first-fit-decreasing by size. A tree larger than the
budget is cut into parts, each a contiguous run [start, end) of the tree's depth-first order preceded by its
root path (the ancestors of `start`). That root path is all the context the run needs: in DFS order, any
ancestor of a node in [start, end) that lies outside the run comes before `start` and therefore is an
ancestor of `start` too. Root-path tokens are recomputed in every part that carries them, but a loss entry
belongs only to the part that owns (not merely carries) its predicting token, so each is counted once.

A loss entry is one (branch, position t) with loss_mask > 0: the logits at the serial index of token t-1 of
that branch predict token t. Entries keep (branch, t) order within every micro-batch.

Several trees in one micro-batch never attend to each other: each keeps its own subtree_end range.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .builder import Forest


@dataclass
class LossEntries:
    """Struct of arrays, one element per trained (branch, position)."""

    row: np.ndarray  # serial index (forest) of the predicting token; local index once in a MicroBatch
    target: np.ndarray  # token id to predict
    mask: np.ndarray  # loss_mask value (a weight ≥ 0)
    old_logprob: np.ndarray  # behaviour log-prob of the target
    ref_logprob: np.ndarray
    prox_logprob: np.ndarray  # NaN where the branch has none
    version: np.ndarray
    branch: np.ndarray  # branch number
    index: np.ndarray  # entry number in the whole batch (to look up per-entry coefficients)

    def take(self, sel: np.ndarray) -> LossEntries:
        return LossEntries(*(getattr(self, f)[sel] for f in self.__dataclass_fields__))

    def __len__(self) -> int:
        return len(self.row)


def loss_entries(forest: Forest) -> LossEntries:
    """All entries of the batch, in (branch, position) order."""
    parts: dict[str, list[np.ndarray]] = {f: [] for f in LossEntries.__dataclass_fields__}
    for b, (br, ix) in enumerate(zip(forest.branches, forest.branch_index)):
        t = np.nonzero(br.loss_mask)[0]  # t ≥ 1 (validated)
        parts["row"].append(ix[t - 1])
        parts["target"].append(br.tokens[t])
        parts["mask"].append(br.loss_mask[t])
        parts["old_logprob"].append(br.logprobs[t])
        parts["ref_logprob"].append(br.ref_logprobs[t])
        parts["prox_logprob"].append(br.prox_logprobs[t])
        parts["version"].append(br.versions[t])
        parts["branch"].append(np.full(len(t), b, dtype=np.int64))
    parts.pop("index")
    out = {f: np.concatenate(v) for f, v in parts.items()}
    return LossEntries(**out, index=np.arange(len(out["row"])))


@dataclass
class Part:
    """A tree or a piece of one: the owned serial range [start, end) and the root path it needs."""

    root_path: np.ndarray  # serial indices of the ancestors of `start`, root first (empty for a whole tree)
    start: int
    end: int

    @property
    def size(self) -> int:
        return len(self.root_path) + self.end - self.start


@dataclass
class MicroBatch:
    """One forward/backward pass: packed tokens (B = 1) and the loss entries computed here."""

    nodes: np.ndarray  # [n] forest serial index of each packed token (-1 for padding)
    input_ids: np.ndarray  # [n]
    position_ids: np.ndarray  # [n] depth
    parent: np.ndarray  # [n] local index of the parent, -1 for roots (and padding chain start)
    subtree_end: np.ndarray  # [n] local
    entries: LossEntries  # row = local packed index

    def __len__(self) -> int:
        return len(self.nodes)


def root_path(forest: Forest, i: int) -> np.ndarray:
    path = []
    p = int(forest.parent[i])
    while p >= 0:
        path.append(p)
        p = int(forest.parent[p])
    return np.asarray(path[::-1], dtype=np.int64)


def split_tree(forest: Forest, start: int, end: int, max_tokens: int) -> list[Part]:
    """Cuts a tree's DFS range into parts of ≤ max_tokens packed tokens (root path included).

    Every part after the first recomputes the root path of its first token (depth[cut] tokens), so where to
    cut matters: among the cut points in the second half of the room left, take the shallowest (latest on
    ties). A cut between the subtrees of a shared prompt's children then carries just the prompt, where the
    fullest possible cut could land deep in a long branch and recompute its whole history.
    """
    if end - start <= max_tokens:
        return [Part(np.zeros(0, dtype=np.int64), start, end)]
    parts = []
    cur = start
    while cur < end:
        room = max_tokens - int(forest.depth[cur])  # depth = number of ancestors = root path length
        if room <= 0:
            raise ValueError(
                f"a branch is deeper than packing.max_tokens={max_tokens} (token at depth {forest.depth[cur]} needs "
                f"its whole root path in one micro-batch): raise packing.max_tokens above the longest trajectory"
            )
        nxt = end
        if end - cur > room:
            lo, hi = cur + max(1, room // 2), cur + room  # candidate cuts lo..hi (the next part starts there)
            d = forest.depth[lo : hi + 1]
            nxt = lo + int(len(d) - 1 - np.argmin(d[::-1]))  # shallowest, latest on ties
        parts.append(Part(root_path(forest, cur), cur, nxt))
        cur = nxt
    return parts


def first_fit_decreasing(sizes: list[int], capacity: int) -> list[list[int]]:
    """Bins of item indices; items sorted by size (stable), each into the first bin with room."""
    order = sorted(range(len(sizes)), key=lambda i: -sizes[i])
    bins: list[list[int]] = []
    room: list[int] = []
    for i in order:
        for k in range(len(bins)):
            if sizes[i] <= room[k]:
                bins[k].append(i)
                room[k] -= sizes[i]
                break
        else:
            bins.append([i])
            room.append(capacity - sizes[i])
    return bins


def pack(
    forest: Forest, max_tokens: int, pad_multiple: int = 1, entries: LossEntries | None = None
) -> list[MicroBatch]:
    """Micro-batches of ≤ max_tokens tokens (before padding to a multiple of pad_multiple, e.g. 128 on GPU)."""
    if max_tokens <= 0:
        raise ValueError(f"packing.max_tokens must be positive, got {max_tokens}")
    if entries is None:
        entries = loss_entries(forest)
    parts = [p for s, e in forest.trees for p in split_tree(forest, s, e, max_tokens)]
    bins = first_fit_decreasing([p.size for p in parts], max_tokens)

    # Entries sorted by row once, so each part finds its owned ones by binary search.
    by_row = np.argsort(entries.row, kind="stable")
    sorted_rows = entries.row[by_row]

    batches = []
    for members in bins:
        members = sorted(members)  # keep forest order inside a micro-batch (deterministic, cache friendly)
        nodes, parent, subtree_end, owned_sel, owned_rows = [], [], [], [], []
        offset = 0
        for k in members:
            p = parts[k]
            nrp = len(p.root_path)
            rng = np.arange(p.start, p.end)
            nodes.append(np.concatenate([p.root_path, rng]))
            size = p.size
            # Root path: a chain.
            par = np.empty(size, dtype=np.int64)
            par[:nrp] = offset + np.arange(nrp) - 1
            if nrp:
                par[0] = -1
            gpar = forest.parent[rng]
            inside = gpar >= p.start
            # A parent outside the run is on the root path; the path node at depth d is root_path[d].
            par[nrp:] = np.where(
                inside,
                offset + nrp + gpar - p.start,
                np.where(gpar >= 0, offset + forest.depth[np.maximum(gpar, 0)], -1),
            )
            parent.append(par)
            # Subtrees clipped to the run (a root-path node's subtree may end inside it: later siblings).
            both = np.concatenate([p.root_path, rng])
            subtree_end.append(offset + nrp + np.minimum(forest.subtree_end[both], p.end) - p.start)
            lo, hi = np.searchsorted(sorted_rows, [p.start, p.end])
            sel = by_row[lo:hi]
            owned_sel.append(sel)
            owned_rows.append(offset + nrp + entries.row[sel] - p.start)
            offset += size
        sel = np.concatenate(owned_sel)
        local_rows = np.concatenate(owned_rows)
        order = np.argsort(sel, kind="stable")  # back to (branch, position) order
        mb_entries = entries.take(sel[order])
        mb_entries.row = local_rows[order]
        nodes_a = np.concatenate(nodes)
        mb = MicroBatch(
            nodes=nodes_a,
            input_ids=forest.tokens[nodes_a],
            position_ids=forest.depth[nodes_a],
            parent=np.concatenate(parent),
            subtree_end=np.concatenate(subtree_end),
            entries=mb_entries,
        )
        batches.append(pad(mb, pad_multiple) if pad_multiple > 1 else mb)
    return batches


def pad(mb: MicroBatch, multiple: int) -> MicroBatch:
    """Appends one dummy chain (token 0) so the length is a multiple of `multiple`; it carries no loss."""
    n = len(mb)
    k = (-n) % multiple
    if k == 0:
        return mb
    total = n + k
    par = np.arange(n - 1, total - 1)
    par[0] = -1
    return MicroBatch(
        nodes=np.r_[mb.nodes, np.full(k, -1)],
        input_ids=np.r_[mb.input_ids, np.zeros(k, dtype=np.int64)],
        position_ids=np.r_[mb.position_ids, np.arange(k)],
        parent=np.r_[mb.parent, par],
        subtree_end=np.r_[mb.subtree_end, np.full(k, total)],
        entries=mb.entries,
    )
