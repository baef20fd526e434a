"""Packed micro-batches → ranks, balanced by the work each one holds.

Every rank packs the same global batch into the same micro-batches (packing is deterministic), then takes the
ones `assign_to_ranks` gives it. The cost of a micro-batch is its number of real packed tokens (unique tokens
plus recomputed root paths; padding excluded): forward/backward time is roughly linear in it, so balancing it
balances the step. Ranks may end up with different micro-batch counts; the step pads the shorter lists with
empty passes (`padded_count`) so that every rank runs as many forward/backward collectives as the others.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .packer import MicroBatch


def pack_cost(mb: MicroBatch | int) -> int:
    """Real tokens of a micro-batch (padding, node -1, excluded); an int is taken as the cost itself."""
    if isinstance(mb, int | np.integer):
        return int(mb)
    return int(np.count_nonzero(np.asarray(mb.nodes) >= 0))


def assign_to_ranks(packs: Sequence[MicroBatch | int], world: int) -> list[list[int]]:
    """Indices of `packs` for each of `world` ranks, balanced by token count (longest-processing-time first:
    the costliest pack goes to the least loaded rank; ties to the lower rank). Deterministic: every rank
    computes the same answer from the same packs. Each rank's indices are in ascending order (pack order)."""
    if world < 1:
        raise ValueError(f"world must be ≥ 1, got {world}")
    costs = [pack_cost(p) for p in packs]
    order = sorted(range(len(costs)), key=lambda i: (-costs[i], i))
    load = [0] * world
    count = [0] * world
    out: list[list[int]] = [[] for _ in range(world)]
    for i in order:
        r = min(range(world), key=lambda k: (load[k], count[k], k))
        out[r].append(i)
        load[r] += costs[i]
        count[r] += 1
    return [sorted(ix) for ix in out]


def padded_count(assignment: Sequence[Sequence[int]]) -> int:
    """Forward/backward passes every rank runs: the longest rank's count, at least one (a rank with nothing
    to train still joins the gradient reduction)."""
    return max(1, max((len(ix) for ix in assignment), default=0))


__all__ = ["assign_to_ranks", "pack_cost", "padded_count"]
