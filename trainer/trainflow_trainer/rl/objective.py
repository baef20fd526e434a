"""The RL objective of a stage, as its resolved config says, and one policy update on a batch.

`algorithm` arrives resolved (src/config/algorithm.ts holds the presets and every default: the trainer adds
none, and a field missing from a job spec is an error naming it). The log-probs the loss uses are those of
the sampler's distribution: `rollout.temperature` and `rollout.top_p` go into the LossSpec, so an on-policy
token has importance ratio 1 (trie/losses.py).

One update (`update`): the batch's branches are split into `algorithm.minibatches` contiguous minibatches
(a group's branches are contiguous, so at most one group per boundary is split), each one optimizer step
with its own loss aggregation, as verl's ppo_mini_batch_size does. With decoupled PPO the proximal policy
is the policy before the first minibatch: its log-probs are computed once, under no_grad, before any step
(AReaL recomputes them the same way). With one minibatch π_prox is the current policy itself, so the clip
cannot act (r = 1) and the update is the importance-weighted policy gradient w·A·∇log π_θ, w = π_prox/μ
truncated at behav_weight_cap; the extra forward is then skipped (the loss uses log π_θ, detached, which is
the same value). With several minibatches the later ones see π_θ ≠ π_prox and the clip bounds the drift.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch

from ..contract import StageConfig
from ..train import Dist, optimizer_step
from ..trie import LossSpec, Trajectory, forward_backward
from ..trie.step import packed_logprobs
from .ranks import shares, sync_gradients

AGGREGATIONS: dict[str, Literal["token_mean", "seq_mean"]] = {"token-mean": "token_mean", "seq-mean": "seq_mean"}


@dataclass(frozen=True)
class Objective:
    loss: LossSpec
    normalize_std: bool
    scaling: str
    minibatches: int
    all_equal_tolerance: float
    kl_reference: str | None  # a configured checkpoint; None: the stage's input (rl/reference.py)


def objective(stage: StageConfig) -> Objective:
    """The stage's objective from its resolved algorithm, rollout and sampling blocks (the schema has checked
    every value: src/config/algorithm.ts)."""
    a, r, s = stage.algorithm, stage.rollout, stage.sampling
    assert a is not None and r is not None and s is not None, "the schema resolves these blocks for rl stages"
    spec = LossSpec(
        kind="ppo",
        aggregation=AGGREGATIONS[a.loss_agg],
        eps_low=a.clip_low,
        eps_high=a.clip_high,
        kl_coef=a.kl_coef,
        entropy_coef=a.entropy_coef,
        temperature=r.temperature,
        top_p=r.top_p,
        decoupled=a.decoupled,
        behav_weight_cap=a.behav_weight_cap,
    )
    return Objective(
        loss=spec,
        normalize_std=a.normalize_std,
        scaling=a.advantage_scaling,
        minibatches=a.minibatches,
        all_equal_tolerance=s.all_equal_tolerance,
        kl_reference=a.kl_reference,
    )


def split_minibatches(trajs: Sequence[Trajectory], n: int) -> list[list[Trajectory]]:
    """n contiguous, non-empty chunks of the branches (fewer when there are fewer branches)."""
    return [[trajs[i] for i in idx] for idx in np.array_split(np.arange(len(trajs)), max(1, min(n, len(trajs))))]


def with_logprobs(
    model: torch.nn.Module, trajs: Sequence[Trajectory], spec: LossSpec, max_tokens: int, field: str
) -> None:
    """Fills `field` (ref_logprobs or prox_logprobs) of every branch with `model`'s log-probs under the
    sampler's distribution (one forward per unique token)."""
    for t, lp in zip(trajs, packed_logprobs(model, trajs, max_tokens, temperature=spec.temperature, top_p=spec.top_p)):
        setattr(t, field, [0.0, *lp.tolist()])


# the objective's metrics a step reports beside the stage's own (names: src/config/metrics.ts; verl's
# actor/pg_clipfrac is clip_frac = clip_frac_low + clip_frac_high, actor/ppo_kl ≈ log ratio_mean)
OBJECTIVE_METRICS = (
    "clip_frac_low",
    "clip_frac_high",
    "ratio_mean",
    "ratio_max",
    "behav_weight_mean",
    "behav_weight_max",
    "kl_ref",
)
SUMMED = ("loss_tokens", "total_tokens", "unique_tokens", "packed_tokens", "micro_batches")
MAXED = ("ratio_max", "behav_weight_max", "policy_version_max")


def merge_metrics(parts: list[dict[str, float]]) -> dict[str, float]:
    """One batch's metrics from its minibatches': token counts summed, maxima maxed, min version minned,
    everything else (loss, clip fractions, ratio mean, KL, ...) the mean over minibatches."""
    out: dict[str, float] = {}
    for k in {k for m in parts for k in m}:
        vals = [m[k] for m in parts if k in m]
        if k in SUMMED:
            out[k] = float(sum(vals))
        elif k in MAXED:
            out[k] = float(max(vals))
        elif k == "policy_version_min":
            out[k] = float(min(vals))
        else:
            out[k] = float(np.mean(vals))
    return out


def update(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    trajs: list[Trajectory],
    obj: Objective,
    packing: dict[str, Any],
    lr: float,
    grad_clip: float,
    d: Dist | None = None,
) -> tuple[dict[str, float], float]:
    """One policy update on a batch (module docstring): (metrics merged over the minibatches, each measured
    in its forward before its own optimizer step, so ratio_* of later minibatches include the drift of the
    earlier steps; the last minibatch's gradient norm). Every minibatch steps at the batch's learning rate.
    d: the job's ranks; several train the same batch together (every rank passes it, rl/ranks.py)."""
    if obj.loss.decoupled and obj.minibatches > 1 and trajs:
        with_logprobs(model, trajs, obj.loss, packing["max_tokens"], "prox_logprobs")
    parts: list[dict[str, float]] = []
    grad_norm = 0.0
    for chunk in split_minibatches(trajs, obj.minibatches) if trajs else [[]]:
        if chunk:
            parts.append(forward_backward(packing, model, chunk, obj.loss, **shares(d)))
        sync_gradients(model, d)
        grad_norm = optimizer_step(model, optimizer, lr, grad_clip)
    metrics = merge_metrics(parts)
    if "kl" in metrics:
        metrics["kl_ref"] = metrics["kl"]  # k3 KL to the reference, on the trained tokens
    return metrics, grad_norm
