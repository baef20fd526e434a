"""Packed micro-batches → ranks, balanced by the work each one holds.

Every rank packs the same global batch into the same micro-batches (packing is deterministic), then takes the
ones `assign_to_ranks` gives it. The cost of a micro-batch is its number of real packed tokens (unique tokens
plus recomputed root paths; padding excluded): forward/backward time is roughly linear in it, so balancing it
balances the step. Ranks may end up with different micro-batch counts; the step pads the shorter lists with
empty passes (`padded_count`) so that every rank runs as many forward/backward collectives as the others.

A batch whose packing leaves ranks idle or lopsided (one GRPO group is one tree: a single micro-batch at the
full budget, so a second rank would only run an empty pass) is re-packed at smaller budgets by
`pack_for_ranks`: cutting the tree costs a recomputed root path per extra part, so the budget kept is the one
that minimises the busiest rank's tokens, not the one that makes the most parts.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .builder import Forest
from .packer import LossEntries, MicroBatch, pack


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


def busiest_rank_load(packs: Sequence[MicroBatch | int], world: int) -> int:
    """Real tokens of the most loaded rank once `assign_to_ranks` has dealt the packs: the step's time."""
    costs = [pack_cost(p) for p in packs]
    return max((sum(costs[i] for i in ix) for ix in assign_to_ranks(costs, world)), default=0)


# Re-pack only when the busiest rank carries this much more than an even share of the tokens.
IMBALANCE_TO_REPACK = 1.10
BUDGETS_TRIED = 16


def pack_for_ranks(
    forest: Forest, max_tokens: int, world: int, pad_multiple: int = 1, entries: LossEntries | None = None
) -> list[MicroBatch]:
    """`pack(forest, max_tokens)`, or — when that would leave the busiest of `world` ranks with over
    IMBALANCE_TO_REPACK × an even share — the packing at a smaller budget (from the deepest root path + 1 up to
    max_tokens, BUDGETS_TRIED evenly spaced) whose busiest rank has the fewest real tokens (ties: the larger
    budget). Deterministic, so every rank picks the same packing. Gradients do not depend on the packing."""
    packs = pack(forest, max_tokens, pad_multiple=pad_multiple, entries=entries)
    if world <= 1:
        return packs
    even = sum(pack_cost(p) for p in packs) / world
    best, best_load = packs, busiest_rank_load(packs, world)
    if best_load <= IMBALANCE_TO_REPACK * even:
        return packs
    floor = int(forest.depth.max()) + 1  # a token and its whole root path must share a micro-batch
    for budget in sorted({int(b) for b in np.linspace(floor, max_tokens, BUDGETS_TRIED)}, reverse=True):
        if budget >= max_tokens:
            continue
        cand = pack(forest, budget, pad_multiple=pad_multiple, entries=entries)
        load = busiest_rank_load(cand, world)
        if load < best_load:
            best, best_load = cand, load
    return best


__all__ = ["assign_to_ranks", "busiest_rank_load", "pack_cost", "pack_for_ranks", "padded_count"]
