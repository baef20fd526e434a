"""Per-token losses on log-probs gathered from shared logits, and the flat reference over padded sequences.

Every loss here is a weighted sum over trained (branch, position) entries:

    loss = Σ_entries coef · ℓ(logp, old_logp, advantage, ref_logp, entropy)

with ℓ the per-token term and coef fixing the aggregation over the WHOLE batch (not per micro-batch, so
gradient accumulation over micro-batches and tree partitioning change nothing):
- token_mean: coef = weight_b · mask / Σ_all mask                         (DAPO, SFT)
- seq_mean:   coef = weight_b · mask / Σ_t mask_b / #branches-with-tokens  (GRPO: mean of sequence means)
- sum:        coef = weight_b · mask
Per-token terms:
- ce:  ℓ = -logp                                                           (SFT, RFT)
- ppo: ℓ = max(-A·r, -A·clip(r, 1-eps_low, 1+eps_high)), r = exp(logp - old_logp)
       (PPO-clip; GRPO = seq_mean; DAPO = token_mean with clip-higher eps_high > eps_low)
- both: + kl_coef · k3(ref, logp) - entropy_coef · H(row),  k3 = exp(ref-logp) - (ref-logp) - 1.

Memory: the trie never forms log-softmax per branch. logsumexp (and the entropy, when used) is computed once
per packed row; each entry then gathers one logit, logits[row, target] - lse[row].
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from torch import Tensor

Kind = Literal["ce", "ppo"]
Aggregation = Literal["token_mean", "seq_mean", "sum"]


@dataclass(frozen=True)
class LossSpec:
    kind: Kind = "ce"
    aggregation: Aggregation = "token_mean"
    eps_low: float = 0.2
    eps_high: float = 0.2
    kl_coef: float = 0.0
    entropy_coef: float = 0.0

    def __post_init__(self) -> None:
        if self.kind not in ("ce", "ppo"):
            raise ValueError(f"loss kind {self.kind!r} unknown (use ce, ppo; or from_config with sft/rft/grpo/dapo)")
        if self.aggregation not in ("token_mean", "seq_mean", "sum"):
            raise ValueError(f"loss aggregation {self.aggregation!r} unknown (token_mean, seq_mean or sum)")
        if self.eps_low < 0 or self.eps_high < 0:
            raise ValueError("clip ranges eps_low/eps_high must be ≥ 0")

    @classmethod
    def from_config(cls, algorithm: str, **overrides) -> LossSpec:
        """Named defaults: sft/rft (ce, token_mean), ppo, grpo (seq_mean), dapo (token_mean, clip-higher)."""
        base = {
            "sft": dict(kind="ce"),
            "rft": dict(kind="ce"),
            "ppo": dict(kind="ppo", aggregation="token_mean"),
            "grpo": dict(kind="ppo", aggregation="seq_mean"),
            "dapo": dict(kind="ppo", aggregation="token_mean", eps_low=0.2, eps_high=0.28),
        }
        if algorithm not in base:
            raise ValueError(f"algorithm {algorithm!r} unknown (known: {', '.join(base)})")
        return cls(**{**base[algorithm], **overrides})


def entry_coefficients(mask: np.ndarray, branch: np.ndarray, weights: np.ndarray, spec: LossSpec) -> np.ndarray:
    """coef per entry (float64), see module docstring. mask/branch per entry, weights per branch."""
    coef = mask * weights[branch]
    if spec.aggregation == "token_mean":
        total = mask.sum()
        return coef / total if total > 0 else coef
    if spec.aggregation == "seq_mean":
        per_branch = np.bincount(branch, weights=mask, minlength=len(weights))
        n_branches = int((per_branch > 0).sum())
        return coef / per_branch[branch] / max(n_branches, 1) if len(coef) else coef
    return coef


def gather_logprobs(logits: Tensor, rows: Tensor, targets: Tensor) -> tuple[Tensor, Tensor]:
    """log p(target | row) per entry, and the per-row logsumexp it used. logits [N, V], rows/targets [M]."""
    lse = torch.logsumexp(logits, dim=-1)
    return logits[rows, targets] - lse[rows], lse


def row_entropy(logits: Tensor, lse: Tensor) -> Tensor:
    """Entropy of each row's distribution: lse - Σ p·logit (one pass per row, shared by all its branches)."""
    p = torch.exp(logits - lse[:, None])
    return lse - (p * logits).sum(-1)


@dataclass
class TokenStats:
    clipped: Tensor  # bool per entry: the clipped branch of the PPO min was taken (gradient zero)
    kl: Tensor | None
    entropy: Tensor | None


def token_losses(
    spec: LossSpec, logp: Tensor, old_logp: Tensor, advantage: Tensor, ref_logp: Tensor, entropy: Tensor | None
) -> tuple[Tensor, TokenStats]:
    """ℓ per entry (see module docstring)."""
    if spec.kind == "ce":
        loss = -logp
        clipped = torch.zeros_like(logp, dtype=torch.bool)
    else:
        ratio = torch.exp(logp - old_logp)
        unclipped = -advantage * ratio
        clipped_term = -advantage * torch.clamp(ratio, 1.0 - spec.eps_low, 1.0 + spec.eps_high)
        loss = torch.maximum(unclipped, clipped_term)
        clipped = clipped_term > unclipped
    kl = None
    if spec.kl_coef != 0.0:
        d = ref_logp - logp
        kl = torch.exp(d) - d - 1.0
        loss = loss + spec.kl_coef * kl
    if spec.entropy_coef != 0.0:
        if entropy is None:
            raise ValueError("entropy_coef is set but no entropy was computed")
        loss = loss - spec.entropy_coef * entropy
    return loss, TokenStats(clipped, kl, entropy)


# ------------------------------------------------------------------------------------- flat reference


def flat_reference_loss(model, trajectories: Sequence, spec: LossSpec) -> tuple[Tensor, list[Tensor]]:
    """The plain computation: right-padded [B, T] batch, causal attention, full log-softmax, per-sequence
    aggregation written out directly. Returns (loss, per-branch log-probs of tokens 1..n-1). Tests only.
    """
    from .builder import Trajectory

    trajs = [t.validated(b) if isinstance(t, Trajectory) else t for b, t in enumerate(trajectories)]
    device = next(model.parameters()).device
    dtype = next(model.parameters()).dtype
    n = max(len(t.tokens) for t in trajs)
    ids = torch.zeros(len(trajs), n, dtype=torch.long, device=device)
    for b, t in enumerate(trajs):
        ids[b, : len(t.tokens)] = torch.as_tensor(t.tokens)
    logits = model(ids)  # causal: right padding cannot leak into earlier positions
    logsm = torch.log_softmax(logits.to(dtype), dim=-1)
    per_branch_logp = []
    branch_sums, branch_masks, branch_weights = [], [], []
    for b, t in enumerate(trajs):
        L = len(t.tokens)
        tgt = torch.as_tensor(t.tokens[1:], device=device)
        lp = logsm[b, : L - 1].gather(-1, tgt[:, None])[:, 0]
        per_branch_logp.append(lp)
        ent = None
        if spec.entropy_coef != 0.0:
            p = torch.softmax(logits[b, : L - 1].to(dtype), -1)
            ent = -(p * logsm[b, : L - 1]).sum(-1)
        f = lambda a: torch.as_tensor(np.asarray(a[1:], dtype=np.float64), device=device, dtype=dtype)  # noqa: E731
        ell, _ = token_losses(
            spec, lp, f(t.logprobs), torch.tensor(t.advantage, dtype=dtype, device=device), f(t.ref_logprobs), ent
        )
        mask = f(t.loss_mask)
        branch_sums.append((mask * ell).sum() * t.weight)
        branch_masks.append(mask.sum())
        branch_weights.append(t.weight)
    sums = torch.stack(branch_sums)
    masks = torch.stack(branch_masks)
    if spec.aggregation == "sum":
        loss = sums.sum()
    elif spec.aggregation == "token_mean":
        loss = sums.sum() / masks.sum().clamp_min(torch.finfo(dtype).tiny)  # no trained token: loss 0
    else:
        has = masks > 0
        loss = (sums[has] / masks[has]).sum() / has.sum().clamp_min(1)
    return loss, per_branch_logp
