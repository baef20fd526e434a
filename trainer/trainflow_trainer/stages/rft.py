"""Rejection-sampling fine-tuning (`kind: rft`): rollouts through the data plane, verification, keep the
passing ones (rft.keep: passing) or the top fraction by reward (rft.keep: top, rft.top_fraction), then SFT on
them with trie packing (loss on the tokens the model generated, as recorded: token in, token out).

The rollouts run once per attempt that has no committed checkpoint yet (one group per task; the verifier's
rewards go into the sampler's statistics, saved where the RL stage's sampler loads them: RFT's pass rates
seed RL's sampling). The kept trajectories are committed inside every checkpoint (kept.json), so a retry
trains on exactly the same set from the same position.
"""

from __future__ import annotations

import json
import random
import time
from pathlib import Path

import torch

from ..contract import DriverCollected
from ..errors import BadInput, Preempted
from ..rl.batch import to_trajectories
from ..rl.policy import open_stage, save_checkpoint, write_weights
from ..rl.rollouts import Rollouts
from ..train import lr_at
from ..trie import LossSpec, Trajectory, forward_backward
from .rl import packing

KEPT_FILE = "kept.json"


def select(groups: list[dict], rft: dict) -> list[dict]:
    """The trajectories (ledger records) RFT trains on."""
    keep = rft.get("keep", "passing")
    trajs = [t for g in groups for t in g["trajectories"]]
    if keep == "passing":
        return [t for t in trajs if float(t["reward"]) >= 1.0]
    if keep == "top":
        frac = float(rft.get("top_fraction", 0.25))
        ranked = sorted(trajs, key=lambda t: -float(t["reward"]))
        return [t for t in ranked[: max(1, int(len(ranked) * frac))] if float(t["reward"]) > 0]
    raise BadInput(f"stage.rft.keep: expected passing or top, got {keep!r}")


def run(ctx) -> None:
    spec, stage = ctx.spec, ctx.spec.stage
    pack = packing(stage)
    opened = open_stage(ctx)
    if opened is None:
        return
    tcfg, every, keep_last, policy = opened

    if policy.found:
        kept = json.loads((policy.found.local_dir / KEPT_FILE).read_text())
        rollout_metrics, sampler_stats = (
            policy.state["rollout_metrics"],
            json.loads(policy.sampler_file.read_text()) if policy.sampler_file else None,
        )
    else:
        from ..tasks import load_tasks

        n_tasks = len(load_tasks(stage.get("tasks") or {}))
        weights = write_weights(policy, Path(spec.work_dir) / "policy" / "v-000000")
        with Rollouts.start(ctx, weights, 0, -1, None, "collect", groups=n_tasks) as ro:
            try:
                msg = ro.next_message(ctx)
            except InterruptedError:
                raise Preempted() from None
        if not isinstance(msg, DriverCollected):
            raise RuntimeError(f"data plane: expected the collected rollouts, got {msg.type!r}")
        groups = [g.model_dump(mode="json", exclude_unset=True) for g in msg.groups]
        kept = select(groups, stage.get("rft") or {})
        rollout_metrics, sampler_stats = msg.metrics, msg.sampler_stats
        ctx.log(
            f"trainflow: rft rollouts: {rollout_metrics.get('episodes', 0):.0f} episodes, pass rate "
            f"{rollout_metrics.get('pass_rate', 0):.3f}; keeping {len(kept)}"
        )

    examples: list[Trajectory] = []
    for t in kept:  # loss on generated tokens only: cross-entropy on what the model produced and passed
        examples.extend(to_trajectories([{"trajectories": [t]}], 0, mode="sft")[0])
    lspec = LossSpec.from_config("rft")
    step = policy.step
    metrics: dict[str, float] = {**{k: float(v) for k, v in rollout_metrics.items()}, "kept": float(len(kept))}
    rng = random.Random(tcfg.seed)
    order: list[int] = []
    for _ in range(tcfg.steps * tcfg.batch_size // max(1, len(examples)) + 1 if examples else 0):
        perm = list(range(len(examples)))
        rng.shuffle(perm)
        order.extend(perm)
    model, optimizer = policy.model, policy.optimizer
    while step < tcfg.steps:
        if ctx.should_stop():
            raise Preempted()
        t0 = time.perf_counter()
        m: dict = {}
        if examples:
            batch = [examples[i] for i in order[step * tcfg.batch_size : (step + 1) * tcfg.batch_size]]
            for g in optimizer.param_groups:
                g["lr"] = lr_at(step, tcfg)
            optimizer.zero_grad(set_to_none=True)
            m = forward_backward(pack, model, batch, lspec)
            torch.nn.utils.clip_grad_norm_(model.parameters(), tcfg.grad_clip or float("inf"))
            optimizer.step()
        step += 1
        dt = time.perf_counter() - t0
        metrics.update(
            loss=float(m.get("loss", 0.0)), tokens_per_s=float(m.get("total_tokens", 0.0)) / dt if dt > 0 else 0.0
        )
        ctx.status.update(step=step, metrics=metrics, write=(step == 1))
        final = step == tcfg.steps
        stop = ctx.should_stop()
        if final or (every and step % every == 0) or stop:
            local_extra = {
                "total_steps": tcfg.steps,
                "stage": stage.get("name"),
                "kind": "rft",
                "metrics": metrics,
                "rollout_metrics": rollout_metrics,
            }
            save_checkpoint(
                ctx,
                policy,
                step,
                final,
                local_extra,
                sampler_stats,
                keep_last,
                extra_files={KEPT_FILE: json.dumps(kept) + "\n"},
            )
        if stop and not final:
            raise Preempted()
    if not examples:
        ctx.log("trainflow: rft kept no rollouts: the weights are unchanged (the stage still commits them)")
    ctx.status.update(step=step, metrics=metrics)
