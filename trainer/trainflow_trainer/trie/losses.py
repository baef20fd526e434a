"""Per-token losses on log-probs gathered from shared logits, and the flat reference over padded sequences.

Every loss here is a weighted sum over trained (branch, position) entries:

    loss = Σ_entries coef · ℓ(logp, old_logp, advantage, ref_logp, entropy[, prox_logp])

with ℓ the per-token term and coef fixing the aggregation over the WHOLE batch (not per micro-batch, so
gradient accumulation over micro-batches and tree partitioning change nothing):
- token_mean: coef = weight_b · mask / Σ_all mask                         (DAPO, SFT)
- seq_mean:   coef = weight_b · mask / Σ_t mask_b / #branches-with-tokens  (GRPO: mean of sequence means)
- sum:        coef = weight_b · mask
Per-token terms:
- ce:  ℓ = -logp                                                           (SFT, RFT)
- ppo, coupled (the clip is centred on the behaviour policy μ that sampled the token):
       ℓ = max(-A·r, -A·clip(r, 1-eps_low, 1+eps_high)),  r = π_θ/μ = exp(logp - old_logp)
- ppo, decoupled (AReaL, Fu et al. 2025, "AReaL: A Large-Scale Asynchronous Reinforcement Learning System
       for Language Reasoning", eq. 5): the clip is centred on a proximal policy π_prox, the behaviour policy
       only enters through the importance weight w = π_prox/μ (a constant; truncated at `behav_weight_cap`
       when set, as truncated importance sampling does):
       ℓ = w · max(-A·r, -A·clip(r, 1-eps_low, 1+eps_high)),  r = π_θ/π_prox
       π_prox is the policy before this batch's first optimizer step (`prox_logprobs`); a branch without them
       uses logp itself, detached: the same value, so r = 1 and the gradient is w·A·∇logp (the clip is then
       inactive: see rl/objective.py, `algorithm.minibatches`, for when it is not).
- both: + kl_coef · k3(ref, logp) - entropy_coef · H(row),  k3 = exp(ref-logp) - (ref-logp) - 1.

Log-probs are those of the distribution the sampler drew from (`sampling_logprobs`): logits divided by the
temperature, then restricted to the top-p nucleus and renormalised, exactly as serve/engine.py samples. So
on-policy tokens have r = 1 whatever rollout.temperature and rollout.top_p are. The nucleus of a row is that
of the current logits; a target outside it (an off-policy token the current policy would no longer sample)
is added to it, which keeps its log-prob finite and differentiable. The entropy is that of the tempered
distribution before truncation.

Memory: the trie never forms log-softmax per branch. logsumexp (and the entropy, when used) is computed once
per packed row; each entry then gathers one logit, z[row, target] - lse[row].
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

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
    temperature: float = 1.0  # the sampler's: log-probs of softmax(logits / temperature); ≤ 0 is greedy (raw)
    top_p: float = 1.0  # the sampler's nucleus: log-probs renormalised over it
    decoupled: bool = False  # decoupled PPO (clip on π_θ/π_prox, weight π_prox/μ); coupled otherwise
    behav_weight_cap: float | None = None  # decoupled: truncate π_prox/μ at this value (None: no truncation)

    def __post_init__(self) -> None:
        if self.kind not in ("ce", "ppo"):
            raise ValueError(f"loss kind {self.kind!r} unknown (use ce or ppo)")
        if self.aggregation not in ("token_mean", "seq_mean", "sum"):
            raise ValueError(f"loss aggregation {self.aggregation!r} unknown (token_mean, seq_mean or sum)")
        if self.eps_low < 0 or self.eps_high < 0:
            raise ValueError("clip ranges eps_low/eps_high must be ≥ 0")
        if not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.behav_weight_cap is not None and self.behav_weight_cap <= 0:
            raise ValueError(f"behav_weight_cap must be > 0, got {self.behav_weight_cap}")

    @classmethod
    def from_config(cls, algorithm: str, **overrides: Any) -> LossSpec:
        """The supervised losses of sft/rft (ce, token_mean). RL presets live in src/config/algorithm.ts."""
        if algorithm not in ("sft", "rft"):
            raise ValueError(f"algorithm {algorithm!r}: from_config knows sft and rft (RL specs come resolved)")
        return cls(**{"kind": "ce", **overrides})


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


def scaled_logits(logits: Tensor, temperature: float) -> Tensor:
    """The sampler's logits: divided by the temperature (unchanged for temperature ≤ 0, greedy)."""
    return logits / temperature if temperature > 0 else logits


def nucleus(z: Tensor, top_p: float) -> Tensor:
    """Bool mask [..., V] of the top-p nucleus of softmax(z): the most likely tokens, in descending order,
    while the mass before each is < top_p (so the token crossing top_p is in). The engine samples from it."""
    probs = torch.softmax(z.detach(), dim=-1)
    sorted_p, order = torch.sort(probs, dim=-1, descending=True)
    keep_sorted = torch.cumsum(sorted_p, dim=-1) - sorted_p < top_p
    return torch.zeros_like(keep_sorted).scatter(-1, order, keep_sorted)


def sampling_logprobs(
    logits: Tensor, rows: Tensor, targets: Tensor, temperature: float = 1.0, top_p: float = 1.0
) -> tuple[Tensor, Tensor, Tensor]:
    """log p(target | row) per entry under the sampler's distribution (see module docstring), plus the
    scaled logits z [R, V] and their full logsumexp [R] (for the entropy). logits [R, V], rows/targets [M]."""
    z = scaled_logits(logits, temperature)
    lse = torch.logsumexp(z, dim=-1)
    picked = z[rows, targets]
    if top_p >= 1.0 or temperature <= 0:
        return picked - lse[rows], z, lse
    keep = nucleus(z, top_p)
    lse_keep = torch.logsumexp(z.masked_fill(~keep, float("-inf")), dim=-1)[rows]
    inside = keep[rows, targets]
    denom = torch.where(inside, lse_keep, torch.logaddexp(lse_keep, picked))
    return picked - denom, z, lse


def entry_logprobs(
    logits: Tensor, rows: Tensor, targets: Tensor, temperature: float, top_p: float, with_entropy: bool
) -> tuple[Tensor, Tensor | None]:
    """log p(target | row) per entry as `sampling_logprobs` defines it, and each entry's row entropy when
    asked for. Without a nucleus and without the entropy (the common training step) this is the fused
    `_RowLogprobs`, else the composed ops."""
    if not with_entropy and (top_p >= 1.0 or temperature <= 0):
        return row_logprobs(logits, rows, targets, temperature), None
    logp, z, lse = sampling_logprobs(logits, rows, targets, temperature, top_p)
    return logp, row_entropy(z, lse)[rows] if with_entropy else None


def row_logprobs(logits: Tensor, rows: Tensor, targets: Tensor, temperature: float = 1.0) -> Tensor:
    """z[rows, targets] - logsumexp(z[rows]) with z = scaled_logits(logits, temperature): the full-vocabulary
    log-prob of each entry's target, fused (see `_RowLogprobs`). logits [R, V], rows/targets [M]."""
    out: Tensor = _RowLogprobs.apply(logits, rows, targets, temperature)
    return out


# Rows per chunk of the fused log-prob's vocabulary-wide passes on CPU: 2^18 floats (1 MiB float32) stay in
# a core's L2 cache between the passes. On an accelerator each chunk is a kernel launch: one chunk there.
_CHUNK_ELEMENTS = 2**18


def _step(logits: Tensor) -> int:
    """Rows per chunk (see _CHUNK_ELEMENTS)."""
    n, v = logits.shape
    return max(1, n if logits.device.type != "cpu" else _CHUNK_ELEMENTS // max(v, 1))


class _RowLogprobs(torch.autograd.Function):
    """logp[m] = z[r_m, t_m] - lse(z[r_m]), z = logits / temperature, with the vocabulary-wide work fused.

    Composed of autograd ops, this step is a dozen full passes over the [R, V] logits (the division by the
    temperature and its backward, logsumexp's max/sub/exp/sum, its backward's sub/exp/mul, the index
    backward's zero-fill, the sum of both gradients), memory-bound, that cost more than the LM head's three
    matmuls on the tiny preset (~0.2 s of a 0.85 s GRPO trie step) and are the same in the trie and the flat
    layout. Here: forward, one logsumexp per cache-sized chunk of rows (nothing [R, V] allocated; logits
    saved as the LM head produced them); backward, per chunk, grad = -softmax(z)·Σ_m∈row g_m / T written
    once in place, then g_m / T added at each entry's (row, target), as
    d logp_m / d z[r, v] = [r = r_m]·([v = t_m] - softmax(z[r])[v])."""

    @staticmethod
    def forward(ctx: Any, logits: Tensor, rows: Tensor, targets: Tensor, temperature: float) -> Tensor:
        scaled = temperature > 0 and temperature != 1.0
        lse = logits.new_empty(logits.shape[0])
        step = _step(logits)
        for s in range(0, logits.shape[0], step):
            chunk = logits[s : s + step]
            lse[s : s + step] = torch.logsumexp(chunk / temperature if scaled else chunk, dim=-1)
        picked = logits[rows, targets]
        if scaled:
            picked = picked / temperature
        ctx.save_for_backward(logits, lse, rows, targets)
        ctx.temperature = temperature if scaled else 1.0
        return picked - lse[rows]

    @staticmethod
    def backward(ctx: Any, g: Tensor) -> tuple[Tensor, None, None, None]:
        logits, lse, rows, targets = ctx.saved_tensors
        t = ctx.temperature
        g = g.contiguous()
        row_g = logits.new_zeros(logits.shape[0]).index_add_(0, rows, g)  # Σ of g over each row's entries
        coef = row_g.neg_() if t == 1.0 else row_g.neg_().div_(t)
        grad = torch.empty_like(logits)
        step = _step(logits)
        for s in range(0, logits.shape[0], step):
            out = grad[s : s + step]
            if t == 1.0:
                torch.sub(logits[s : s + step], lse[s : s + step, None], out=out)
            else:
                torch.div(logits[s : s + step], t, out=out).sub_(lse[s : s + step, None])
            out.exp_().mul_(coef[s : s + step, None])
        grad.index_put_((rows, targets), g if t == 1.0 else g / t, accumulate=True)
        return grad, None, None, None


def gather_logprobs(logits: Tensor, rows: Tensor, targets: Tensor) -> tuple[Tensor, Tensor]:
    """log p(target | row) per entry at temperature 1, and the per-row logsumexp it used."""
    logp, _, lse = sampling_logprobs(logits, rows, targets)
    return logp, lse


def row_entropy(logits: Tensor, lse: Tensor) -> Tensor:
    """Entropy of each row's distribution: lse - Σ p·logit (one pass per row, shared by all its branches)."""
    p = torch.exp(logits - lse[:, None])
    return lse - (p * logits).sum(-1)


@dataclass
class TokenStats:
    clipped_low: Tensor  # bool per entry: A < 0 and r < 1 - eps_low (the clipped branch, gradient zero)
    clipped_high: Tensor  # bool per entry: A > 0 and r > 1 + eps_high
    ratio: Tensor  # π_θ/μ per entry, the full importance ratio to the behaviour policy (detached)
    behav_weight: Tensor | None  # decoupled: π_prox/μ as used (after truncation)
    kl: Tensor | None
    entropy: Tensor | None

    @property
    def clipped(self) -> Tensor:
        return self.clipped_low | self.clipped_high


def token_losses(
    spec: LossSpec,
    logp: Tensor,
    old_logp: Tensor,
    advantage: Tensor,
    ref_logp: Tensor,
    entropy: Tensor | None,
    prox_logp: Tensor | None = None,
) -> tuple[Tensor, TokenStats]:
    """ℓ per entry (see module docstring). prox_logp: NaN where a branch has none (then logp, detached)."""
    ratio_behav = torch.exp(logp.detach() - old_logp)
    weight = None
    if spec.kind == "ce":
        loss = -logp
        no = torch.zeros_like(logp, dtype=torch.bool)
        low, high = no, no
    else:
        centre = old_logp
        if spec.decoupled:
            centre = logp.detach() if prox_logp is None else torch.where(prox_logp.isnan(), logp.detach(), prox_logp)
            weight = torch.exp(centre - old_logp)
            if spec.behav_weight_cap is not None:
                weight = torch.clamp(weight, max=spec.behav_weight_cap)
        ratio = torch.exp(logp - centre)
        unclipped = -advantage * ratio
        clipped_term = -advantage * torch.clamp(ratio, 1.0 - spec.eps_low, 1.0 + spec.eps_high)
        loss = torch.maximum(unclipped, clipped_term)
        taken = clipped_term > unclipped
        low, high = taken & (advantage < 0), taken & (advantage > 0)
        if weight is not None:
            loss = weight * loss
    kl = None
    if spec.kl_coef != 0.0:
        d = ref_logp - logp
        kl = torch.exp(d) - d - 1.0
        loss = loss + spec.kl_coef * kl
    if spec.entropy_coef != 0.0:
        if entropy is None:
            raise ValueError("entropy_coef is set but no entropy was computed")
        loss = loss - spec.entropy_coef * entropy
    return loss, TokenStats(low, high, ratio_behav, weight, kl, entropy)


# ------------------------------------------------------------------------------------- flat reference


def flat_reference_loss(model: torch.nn.Module, trajectories: Sequence, spec: LossSpec) -> tuple[Tensor, list[Tensor]]:
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
