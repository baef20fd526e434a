"""Rejection-sampling fine-tuning (`kind: rft`): rollouts through the data plane, verification, keep the
passing ones (rft.keep: passing) or the top fraction by reward (rft.keep: top, rft.top_fraction), then SFT on
them with trie packing (loss on the tokens the model generated, as recorded: token in, token out).

The rollouts run once per attempt that has no committed checkpoint yet (one group per task; the verifier's
rewards go into the sampler's statistics, saved where the RL stage's sampler loads them: RFT's pass rates
seed RL's sampling). The kept trajectories are committed inside every checkpoint (kept.json), so a retry
trains on exactly the same set from the same position.

On several ranks rank 0 alone runs the rollouts; the kept set is broadcast, and every rank trains its share of
each step's packed micro-batches (rl/ranks.py), the gradients summed over ranks before the optimizer step.
"""

from __future__ import annotations

import json
import random
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..contract import DriverCollected, RftConfig, TrainConfig
from ..errors import Preempted
from ..rl.batch import to_trajectories
from ..rl.policy import SAMPLER_FILE, open_policy, sampler_files, write_weights
from ..rl.ranks import from_rank0, shares, sync_gradients
from ..rl.rollouts import Rollouts
from ..runtime import Extra, StageState, run_loop
from ..train import lr_at, optimizer_step
from ..trie import LossSpec, Trajectory, forward_backward
from .rl import packing

if TYPE_CHECKING:
    from ..job import JobContext

KEPT_FILE = "kept.json"


def select(groups: list[dict], rft: RftConfig) -> list[dict]:
    """The trajectories (ledger records) RFT trains on: the passing ones, or the top fraction by reward."""
    trajs = [t for g in groups for t in g["trajectories"]]
    if rft.keep == "passing":
        return [t for t in trajs if float(t["reward"]) >= 1.0]
    ranked = sorted(trajs, key=lambda t: -float(t["reward"]))
    return [t for t in ranked[: max(1, int(len(ranked) * rft.top_fraction))] if float(t["reward"]) > 0]


Collected = tuple[list[dict], dict[str, Any], Any]


def collect(ctx: JobContext, st: StageState) -> Collected:
    """The kept trajectories, the rollouts' metrics and the sampler's statistics, on every rank: rank 0's, from
    the resumed checkpoint or else from one round of rollouts (rl/ranks.py from_rank0)."""
    if st.found:
        return from_rank0(ctx.dist, lambda: resumed(st))
    # the weights are gathered on every rank (a collective under FSDP); rank 0 writes them
    weights = write_weights(st, Path(ctx.spec.work_dir) / "policy" / "v-000000", ctx.dist.is_main)
    return from_rank0(ctx.dist, lambda: roll_out(ctx, weights))


def resumed(st: StageState) -> Collected:
    """The kept set, rollout metrics and sampler statistics the resumed checkpoint holds."""
    assert st.found is not None
    stats_file = st.resumed_file(SAMPLER_FILE)
    return (
        json.loads((st.found.local_dir / KEPT_FILE).read_text()),
        st.state["rollout_metrics"],
        json.loads(stats_file.read_text()) if stats_file else None,
    )


def roll_out(ctx: JobContext, weights: Path) -> Collected:
    """One round of rollouts through the data plane (one group per task), and the ones kept."""
    from ..tasks import load_tasks

    stage = ctx.spec.stage
    assert stage.tasks is not None and stage.rft is not None, "the schema requires them of rft stages"
    n_tasks = len(load_tasks(stage.tasks))
    with Rollouts.start(ctx, weights, 0, -1, None, "collect", groups=n_tasks) as ro:
        try:
            msg = ro.next_message(ctx)
        except InterruptedError:
            raise Preempted() from None
    if not isinstance(msg, DriverCollected):
        raise RuntimeError(f"data plane: expected the collected rollouts, got {msg.type!r}")
    groups = [g.model_dump(mode="json", exclude_unset=True) for g in msg.groups]
    kept = select(groups, stage.rft)
    rollout_metrics = msg.metrics
    ctx.log(
        f"trainflow: rft rollouts: {rollout_metrics.get('episodes', 0):.0f} episodes, pass rate "
        f"{rollout_metrics.get('pass_rate', 0):.3f}; keeping {len(kept)}"
    )
    return kept, rollout_metrics, msg.sampler_stats


def example_order(n: int, tcfg: TrainConfig) -> list[int]:
    """Enough shuffled passes over the n examples for every step's batch (seeded: a resume sees the same)."""
    rng = random.Random(tcfg.seed)
    order: list[int] = []
    for _ in range(tcfg.steps * tcfg.batch_size // max(1, n) + 1 if n else 0):
        perm = list(range(n))
        rng.shuffle(perm)
        order.extend(perm)
    return order


def run(ctx: JobContext) -> None:
    pack = packing(ctx.spec.stage)
    st = open_policy(ctx)
    if st is None:
        return
    tcfg = st.tcfg
    kept, rollout_metrics, sampler_stats = collect(ctx, st)
    examples: list[Trajectory] = []
    for t in kept:  # loss on generated tokens only: cross-entropy on what the model produced and passed
        examples.extend(to_trajectories([{"trajectories": [t]}], 0, mode="sft")[0])
    lspec = LossSpec.from_config("rft")
    metrics: dict[str, float] = {**{k: float(v) for k, v in rollout_metrics.items()}, "kept": float(len(kept))}
    order = example_order(len(examples), tcfg)

    def step_fn(step: int) -> dict[str, float]:
        t0 = time.perf_counter()
        m: dict[str, float] = {}
        if examples:
            batch = [examples[i] for i in order[step * tcfg.batch_size : (step + 1) * tcfg.batch_size]]
            m = forward_backward(pack, st.model, batch, lspec, **shares(ctx.dist))
            sync_gradients(st.model, ctx.dist)
            optimizer_step(st.model, st.optimizer, lr_at(step, tcfg), tcfg.grad_clip)
        dt = time.perf_counter() - t0
        metrics.update(
            loss=float(m.get("loss", 0.0)), tokens_per_s=float(m.get("total_tokens", 0.0)) / dt if dt > 0 else 0.0
        )
        return dict(metrics)

    def extra() -> Extra:
        files = {KEPT_FILE: json.dumps(kept) + "\n", **sampler_files(sampler_stats)}
        return Extra({"rollout_metrics": rollout_metrics}, files)

    run_loop(ctx, st, step_fn, extra)
    if not examples:
        ctx.log("trainflow: rft kept no rollouts: the weights are unchanged (the stage still commits them)")
