"""The rollout stages (rft, rl) on several ranks: one coordinator, every rank training.

Rank 0 is the coordinator: it alone starts the rollout side (the inference server and the data-plane driver,
rl/rollouts.py) and talks to it. Each message the driver sends (a batch, the collected rollouts) is broadcast
to every rank (`Coordinator.next_message`); every rank turns it into the same trajectories, packs them into the
same micro-batches and trains those `trie/distribute.py` deals it (trie/step.py's rank/world); the gradients
are summed over ranks (by FSDP2, or `sync_gradients` for CPU replicas) before the optimizer step, so every rank
holds the same update as one process would. After a step every rank joins the gathering of the full weights
(a collective under FSDP) and rank 0 writes the folder the servers reload from (rl/policy.py `write_weights`);
the commit's extras (ledger cursor, sampler statistics, the trained groups) are rank 0's (runtime.py `save`
writes once).

A failure of the coordinator's conversation (preemption while waiting, the driver dying) is broadcast too, so
the other ranks leave with the same exception instead of waiting forever in the next collective.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import torch
import torch.distributed as dist
from torch import nn

from ..errors import Preempted
from ..train import Dist

if TYPE_CHECKING:
    from ..job import JobContext
    from .rollouts import Rollouts

T = TypeVar("T")


def sync_gradients(model: nn.Module, d: Dist | None) -> None:
    """Sums the ranks' gradients where nothing else does: CPU replicas (an all-reduce per parameter); under
    FSDP2 the backward's reduce-scatter already summed them (train.py parallelize). A parameter no rank gave a
    gradient stays without one (AdamW skips it, as on one process); one that some rank did not reach gets
    zeros there, so every rank joins the same all-reduces."""
    if d is None or not d.distributed or d.fsdp:
        return
    params = list(model.parameters())
    has = torch.tensor([p.grad is not None for p in params], dtype=torch.uint8)
    dist.all_reduce(has, op=dist.ReduceOp.MAX)
    for p, any_grad in zip(params, has.tolist()):
        if not any_grad:
            continue
        if p.grad is None:
            p.grad = torch.zeros_like(p)
        dist.all_reduce(p.grad, op=dist.ReduceOp.SUM)


def shares(d: Dist | None) -> dict[str, int]:
    """This process's share of a batch, as trie/step.py's forward_backward takes it (rank, world)."""
    return {"rank": d.rank, "world": d.world} if d is not None else {}


def broadcast(d: Dist, obj: T | None) -> T:
    """Rank 0's object on every rank (pickled; the driver's messages are small: token ids and statistics)."""
    if not d.distributed:
        assert obj is not None
        return obj
    box: list[Any] = [obj if d.is_main else None]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def from_rank0(d: Dist, fn: Callable[[], T]) -> T:
    """fn() run on rank 0, its result on every rank. Its failure is every rank's: Preempted everywhere, any
    other exception re-raised on rank 0 and a RuntimeError naming it on the others, so no rank is left waiting
    in a collective for one that has gone."""
    outcome: tuple[str, Any] | None = None
    if d.is_main:
        try:
            outcome = ("ok", fn())
        except Preempted:
            outcome = ("preempted", None)
        except Exception as e:
            if d.distributed:
                broadcast(d, ("error", f"{type(e).__name__}: {e}"))
            raise
    kind, value = broadcast(d, outcome)
    if kind == "preempted":
        raise Preempted()
    if kind == "error":
        raise RuntimeError(f"on rank 0: {value}")
    return value


class Coordinator:
    """Rank 0's data-plane conversation as every rank sees it (`ro` is None on the other ranks)."""

    def __init__(self, ctx: JobContext, ro: Rollouts | None) -> None:
        assert (ro is not None) == ctx.dist.is_main, "the rollout side runs on rank 0 only"
        self.ctx, self.ro = ctx, ro

    def _read(self) -> Any:
        assert self.ro is not None
        try:
            return self.ro.next_message(self.ctx)
        except InterruptedError:  # a stop request while waiting for the batch
            raise Preempted() from None

    def next_message(self) -> Any:
        """The driver's next message on every rank (from_rank0: its failures are every rank's)."""
        return from_rank0(self.ctx.dist, self._read)

    def trained(self, weights_dir: Path, version: int) -> None:
        """Tells the manager the new weights are in weights_dir (rank 0; the others have nothing to say)."""
        if self.ro is not None:
            self.ro.trained(weights_dir, version)


__all__ = ["Coordinator", "broadcast", "from_rank0", "shares", "sync_gradients"]
