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
from typing import Any

import numpy as np
import torch

from ..errors import BadInput
from ..trie import LossSpec, Trajectory, forward_backward
from ..trie.step import packed_logprobs
from .batch import SCALINGS

AGGREGATIONS = {"token-mean": "token_mean", "seq-mean": "seq_mean"}
FIELDS = (
    "name",
    "clip_low",
    "clip_high",
    "loss_agg",
    "kl_coef",
    "entropy_coef",
    "normalize_std",
    "advantage_scaling",
    "decoupled",
    "behav_weight_cap",
    "minibatches",
)


@dataclass(frozen=True)
class Objective:
    loss: LossSpec
    normalize_std: bool
    scaling: str
    minibatches: int
    all_equal_tolerance: float
    kl_reference: str | None  # a configured checkpoint; None: the stage's input (rl/reference.py)


def _required(block: dict[str, Any], name: str, key: str) -> Any:
    if key not in block:
        raise BadInput(
            f"stage.{name}.{key} is missing: a job spec carries the resolved config (`trainflow validate` prints "
            "it, every default filled in)"
        )
    return block[key]


def objective(stage: dict[str, Any]) -> Objective:
    """The stage's objective from its resolved algorithm, rollout and sampling blocks (BadInput names a field)."""
    a = stage.get("algorithm") or {}
    r = stage.get("rollout") or {}
    s = stage.get("sampling") or {}
    vals = {k: _required(a, "algorithm", k) for k in FIELDS}
    agg = AGGREGATIONS.get(vals["loss_agg"])
    if agg is None:
        raise BadInput(f"stage.algorithm.loss_agg: expected token-mean or seq-mean, got {vals['loss_agg']!r}")
    if vals["advantage_scaling"] not in SCALINGS:
        raise BadInput(
            f"stage.algorithm.advantage_scaling: expected one of {' | '.join(SCALINGS)}, "
            f"got {vals['advantage_scaling']!r}"
        )
    mb = vals["minibatches"]
    if not isinstance(mb, int) or isinstance(mb, bool) or mb < 1:
        raise BadInput(f"stage.algorithm.minibatches: expected a positive integer, got {mb!r}")
    cap = vals["behav_weight_cap"]
    if cap is not None and not vals["decoupled"]:
        raise BadInput("stage.algorithm.behav_weight_cap applies to decoupled PPO only (set decoupled: true)")
    try:
        spec = LossSpec(
            kind="ppo",
            aggregation=agg,  # type: ignore[arg-type]
            eps_low=float(vals["clip_low"]),
            eps_high=float(vals["clip_high"]),
            kl_coef=float(vals["kl_coef"]),
            entropy_coef=float(vals["entropy_coef"]),
            temperature=float(_required(r, "rollout", "temperature")),
            top_p=float(_required(r, "rollout", "top_p")),
            decoupled=bool(vals["decoupled"]),
            behav_weight_cap=None if cap is None else float(cap),
        )
    except ValueError as e:
        raise BadInput(f"stage.algorithm: {e}") from None
    return Objective(
        loss=spec,
        normalize_std=bool(vals["normalize_std"]),
        scaling=str(vals["advantage_scaling"]),
        minibatches=mb,
        all_equal_tolerance=float(_required(s, "sampling", "all_equal_tolerance")),
        kl_reference=a.get("kl_reference"),
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
    grad_clip: float | None,
) -> tuple[dict[str, float], float]:
    """One policy update on a batch (module docstring): (metrics merged over the minibatches, each measured
    in its forward before its own optimizer step, so ratio_* of later minibatches include the drift of the
    earlier steps; the last minibatch's gradient norm). The learning rate is the caller's, per batch."""
    if obj.loss.decoupled and obj.minibatches > 1 and trajs:
        with_logprobs(model, trajs, obj.loss, packing["max_tokens"], "prox_logprobs")
    parts: list[dict[str, float]] = []
    grad_norm = 0.0
    for chunk in split_minibatches(trajs, obj.minibatches) if trajs else [[]]:
        optimizer.zero_grad(set_to_none=True)
        if chunk:
            parts.append(forward_backward(packing, model, chunk, obj.loss))
        grad_norm = float(torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip or float("inf")))
        optimizer.step()
    metrics = merge_metrics(parts)
    if "kl" in metrics:
        metrics["kl_ref"] = metrics["kl"]  # k3 KL to the reference, on the trained tokens
    return metrics, grad_norm
