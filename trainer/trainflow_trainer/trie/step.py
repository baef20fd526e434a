"""The trainer's entry: forward + backward over a batch of trajectories, trie-packed or flat.

    metrics = packed_forward_backward(model, trajectories, loss_spec, max_tokens)   # packing.mode: trie
    metrics = flat_forward_backward(model, trajectories, loss_spec, max_tokens)     # packing.mode: flat
    optimizer.step()

Both accumulate into `.grad` (call `optimizer.zero_grad()` before) and return plain-float metrics. They share
everything but prefix sharing: flat packs each trajectory as its own chain-shaped tree into the same
micro-batches (varlen packing, no padding, one causal attention call per sequence), so the comparison
isolates what sharing buys, and input without shared prefixes yields bit-identical results in both modes.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist

from ..attention import AttentionMask
from .attention import FlexTreeMask, SegmentTreeMask
from .builder import Trajectory, build_forest
from .distribute import assign_to_ranks, padded_count
from .losses import LossSpec, TokenStats, entry_coefficients, row_entropy, sampling_logprobs, token_losses
from .packer import MicroBatch, loss_entries, pack

# "segment", "flex", or a factory MicroBatch -> AttentionMask (benchmarks plug other backends in here)
Backend = str | Callable[[MicroBatch], AttentionMask]


@dataclass(frozen=True)
class Share:
    """This process's part of a batch that `world` ranks train together. Every rank passes the same global
    batch, packs it into the same micro-batches (packing is deterministic) and runs those `assign_to_ranks`
    deals it; the per-entry loss coefficients are the global batch's, so the ranks' gradients add up to the
    one-process gradient exactly. loss_scale: FSDP2 averages gradients over ranks, so under it the loss is
    scaled by `world` to make that average the sum (1 for replicas whose gradients are all-reduced by sum)."""

    rank: int
    world: int
    loss_scale: float = 1.0

    @property
    def distributed(self) -> bool:
        return self.world > 1


def _mask_for(mb: MicroBatch, device: torch.device, backend: Backend) -> AttentionMask:
    if callable(backend):
        return backend(mb)
    if backend == "flex":
        return FlexTreeMask(mb.subtree_end, device)
    if backend == "segment":
        return SegmentTreeMask(mb.parent)
    raise ValueError(f"unknown tree attention backend {backend!r} (segment or flex)")


def logits_at_rows(
    model: torch.nn.Module, ids: torch.Tensor, pos: torch.Tensor, mask: AttentionMask, rows: torch.Tensor
) -> torch.Tensor:
    """Logits [len(rows), V] of one packed micro-batch at the given rows only.

    Rows that predict nothing (prompts, tool outputs) skip the LM head and every vocab-sized op after it:
    for a 1024-token GRPO prompt that is most of the batch. Runs the model's own modules (HF layout of
    `Transformer`: model.embed_tokens/rotary/layers/norm, lm_head); any other model gets a full forward.
    This mirrors Transformer.forward; the exactness tests compare against model.forward, so drift shows.
    """
    core = getattr(model, "model", None)
    if core is None or not all(hasattr(core, a) for a in ("embed_tokens", "rotary", "layers", "norm")):
        return model(ids, pos, mask)[0][rows]
    x = core.embed_tokens(ids)
    cos, sin = core.rotary(pos, x.dtype)
    for layer in core.layers:
        x = layer(x, cos, sin, mask, None)
    head: torch.nn.Module = getattr(model, "lm_head")  # noqa: B009 (typed: Module attributes are Tensor | Module)
    return head(core.norm(x[0, rows]))


def packed_forward_backward(
    model: torch.nn.Module,
    trajectories: Sequence[Trajectory],
    loss_spec: LossSpec,
    max_tokens: int,
    *,
    share_prefixes: bool = True,
    attention: Backend = "auto",
    backward: bool = True,
    share: Share | None = None,
) -> dict[str, float]:
    """Trie mode. attention: "auto" (flex on CUDA, segment elsewhere), "segment", "flex", or a callable
    MicroBatch -> AttentionMask. share: this rank's part when several ranks train the batch (`Share`); the
    metrics returned are then the whole batch's (summed over ranks: a collective on every rank)."""
    param = next(model.parameters())
    device = param.device
    backend = attention if attention != "auto" else ("flex" if device.type == "cuda" else "segment")
    forest = build_forest(trajectories, share_prefixes=share_prefixes)
    entries = loss_entries(forest)
    weights = np.asarray([br.weight for br in forest.branches])
    coef_all = entry_coefficients(entries.mask, entries.branch, weights, loss_spec)
    adv_all = np.asarray([br.advantage for br in forest.branches])
    batches = pack(forest, max_tokens, pad_multiple=128 if backend == "flex" else 1, entries=entries)

    loss_dtype = param.dtype if param.dtype == torch.float64 else torch.float32
    acc = _Totals()
    trained = [mb for mb in batches if len(mb.entries)]  # a micro-batch without entries adds nothing
    mine, rounds = _my_share(trained, share)
    scale = share.loss_scale if share is not None else 1.0
    for mb in mine:
        e = mb.entries
        ids = torch.as_tensor(mb.input_ids, device=device)[None]
        pos = torch.as_tensor(mb.position_ids, device=device)[None]
        t = lambda a, dt=loss_dtype: torch.as_tensor(a, device=device, dtype=dt)  # noqa: E731
        uniq, inv = np.unique(e.row, return_inverse=True)  # rows shared by several branches: one logit row
        logits = logits_at_rows(model, ids, pos, _mask_for(mb, device, backend), t(uniq, torch.long)).to(loss_dtype)
        rows, targets = t(inv, torch.long), t(e.target, torch.long)
        logp, z, lse = sampling_logprobs(logits, rows, targets, loss_spec.temperature, loss_spec.top_p)
        entropy = row_entropy(z, lse)[rows] if loss_spec.entropy_coef != 0.0 else None
        prox = t(e.prox_logprob) if loss_spec.decoupled else None
        ell, stats = token_losses(
            loss_spec, logp, t(e.old_logprob), t(adv_all[e.branch]), t(e.ref_logprob), entropy, prox
        )
        loss = (t(coef_all[e.index]) * ell).sum()
        if backward:
            (loss * scale if scale != 1.0 else loss).backward()
        acc.add(float(loss.detach()), t(e.mask), logp.detach(), stats)
    if share is not None and share.distributed:
        for _ in range(rounds - len(mine) if batches else 0):  # as many passes as the busiest rank: FSDP's
            _empty_pass(model, trained[0] if trained else batches[0], device, backend, backward)  # pair up
        acc.all_reduce(device)
    metrics = {
        "loss_tokens": float(len(entries)),
        "total_tokens": float(forest.total_tokens),
        "unique_tokens": float(forest.unique_tokens),
        "packed_tokens": float(sum(len(mb) for mb in batches)),  # unique + recomputed root paths (+ padding)
        "micro_batches": float(len(batches)),
        **acc.metrics(float(entries.mask.sum()), loss_spec),
    }
    versions = np.concatenate([br.versions for br in forest.branches])
    metrics["policy_version_min"] = float(versions.min())
    metrics["policy_version_max"] = float(versions.max())
    return metrics


def _my_share(trained: list[MicroBatch], share: Share | None) -> tuple[list[MicroBatch], int]:
    """This rank's micro-batches and the number of passes every rank runs (`trie/distribute.py`)."""
    if share is None or not share.distributed:
        return trained, len(trained)
    assignment = assign_to_ranks(trained, share.world)
    return [trained[i] for i in assignment[share.rank]], padded_count(assignment)


def _empty_pass(model: torch.nn.Module, mb: MicroBatch, device: torch.device, backend: Backend, backward: bool) -> None:
    """A forward/backward that adds exactly zero to every gradient: a rank with fewer micro-batches than the
    busiest one runs these so that every rank takes part in the same collectives (FSDP2 all-gathers in each
    forward and reduce-scatters in each backward); with replicas it is only a little wasted work."""
    ids = torch.as_tensor(mb.input_ids, device=device)[None]
    pos = torch.as_tensor(mb.position_ids, device=device)[None]
    rows = torch.zeros(1, dtype=torch.long, device=device)
    out = logits_at_rows(model, ids, pos, _mask_for(mb, device, backend), rows)
    if backward:
        (out.sum() * 0.0).backward()


class _Totals:
    """Mask-weighted sums over the trained tokens of a batch, turned into the step's objective metrics."""

    SUMS = ("clip_low", "clip_high", "logprob", "ratio", "behav_weight", "kl", "entropy")

    def __init__(self) -> None:
        self.loss = 0.0
        self.sums: dict[str, float] = {}
        self.ratio_max = 0.0
        self.weight_max = 0.0

    def _sum(self, key: str, m: torch.Tensor, v: torch.Tensor) -> None:
        self.sums[key] = self.sums.get(key, 0.0) + float((m * v).sum())

    @torch.no_grad()
    def add(self, loss: float, m: torch.Tensor, logp: torch.Tensor, stats: TokenStats) -> None:
        self.loss += loss
        self._sum("clip_low", m, stats.clipped_low)
        self._sum("clip_high", m, stats.clipped_high)
        self._sum("logprob", m, logp)
        self._sum("ratio", m, stats.ratio)
        trained = m > 0
        if bool(trained.any()):
            self.ratio_max = max(self.ratio_max, float(stats.ratio[trained].max()))
        if stats.behav_weight is not None:
            self._sum("behav_weight", m, stats.behav_weight)
            if bool(trained.any()):
                self.weight_max = max(self.weight_max, float(stats.behav_weight[trained].max()))
        if stats.kl is not None:
            self._sum("kl", m, stats.kl)
        if stats.entropy is not None:
            self._sum("entropy", m, stats.entropy)

    def all_reduce(self, device: torch.device) -> None:
        """The whole batch's totals from every rank's: sums summed, maxima maxed (a collective)."""
        sums = torch.tensor([self.loss, *(self.sums.get(k, 0.0) for k in self.SUMS)], dtype=torch.float64)
        maxima = torch.tensor([self.ratio_max, self.weight_max], dtype=torch.float64)
        sums, maxima = sums.to(device), maxima.to(device)
        dist.all_reduce(sums, op=dist.ReduceOp.SUM)
        dist.all_reduce(maxima, op=dist.ReduceOp.MAX)
        self.loss, *rest = sums.tolist()
        self.sums = dict(zip(self.SUMS, rest))
        self.ratio_max, self.weight_max = maxima.tolist()

    def metrics(self, mask_total: float, spec: LossSpec) -> dict[str, float]:
        d = mask_total if mask_total > 0 else 1.0
        mean = lambda k: self.sums.get(k, 0.0) / d  # noqa: E731
        out = {
            "loss": self.loss,
            "clip_frac": mean("clip_low") + mean("clip_high"),  # verl: actor/pg_clipfrac
            "clip_frac_low": mean("clip_low"),
            "clip_frac_high": mean("clip_high"),
            "ratio_mean": mean("ratio"),  # π_θ/μ on the trained tokens, before this step's update
            "ratio_max": self.ratio_max,
            "mean_logprob": mean("logprob"),
        }
        if spec.decoupled and spec.kind == "ppo":
            out["behav_weight_mean"] = mean("behav_weight")
            out["behav_weight_max"] = self.weight_max
        if spec.kl_coef != 0.0:
            out["kl"] = mean("kl")
        if spec.entropy_coef != 0.0:
            out["entropy"] = mean("entropy")
        return out


def flat_forward_backward(
    model: torch.nn.Module,
    trajectories: Sequence[Trajectory],
    loss_spec: LossSpec,
    max_tokens: int,
    *,
    attention: Backend = "auto",
    backward: bool = True,
    share: Share | None = None,
) -> dict[str, float]:
    """Flat mode: the same computation with every trajectory packed on its own (no shared prefixes)."""
    return packed_forward_backward(
        model,
        trajectories,
        loss_spec,
        max_tokens,
        share_prefixes=False,
        attention=attention,
        backward=backward,
        share=share,
    )


def forward_backward(
    packing: dict,
    model: torch.nn.Module,
    trajectories: Sequence[Trajectory],
    loss_spec: LossSpec,
    share: Share | None = None,
) -> dict[str, float]:
    """Dispatch on the config's `packing: {mode: trie | flat, max_tokens}` block; share: as packed_forward_backward."""
    mode = packing.get("mode", "trie")
    max_tokens = packing.get("max_tokens")
    if not isinstance(max_tokens, int) or max_tokens <= 0:
        raise ValueError(f"packing.max_tokens must be a positive integer, got {max_tokens!r}")
    if mode == "trie":
        return packed_forward_backward(model, trajectories, loss_spec, max_tokens, share=share)
    if mode == "flat":
        return flat_forward_backward(model, trajectories, loss_spec, max_tokens, share=share)
    raise ValueError(f"packing.mode {mode!r} unknown (trie or flat)")


@torch.no_grad()
def packed_logprobs(
    model: torch.nn.Module,
    trajectories: Sequence[Trajectory],
    max_tokens: int,
    *,
    share_prefixes: bool = True,
    attention: Backend = "auto",
    temperature: float = 1.0,
    top_p: float = 1.0,
) -> list[torch.Tensor]:
    """Per-branch log-probs of tokens 1..n-1 under `model`, one forward per unique token (e.g. reference or
    proximal log-probs for RL), under the sampler's distribution (temperature, top-p: see losses.py).
    Returns one 1-D tensor per trajectory (length len(tokens) - 1)."""
    everything = [Trajectory(t.tokens) for t in trajectories]  # loss on every position → an entry for each
    param = next(model.parameters())
    device = param.device
    backend = attention if attention != "auto" else ("flex" if device.type == "cuda" else "segment")
    forest = build_forest(everything, share_prefixes=share_prefixes)
    entries = loss_entries(forest)
    out = torch.empty(len(entries), dtype=param.dtype if param.dtype == torch.float64 else torch.float32, device=device)
    for mb in pack(forest, max_tokens, pad_multiple=128 if backend == "flex" else 1, entries=entries):
        e = mb.entries
        ids = torch.as_tensor(mb.input_ids, device=device)[None]
        pos = torch.as_tensor(mb.position_ids, device=device)[None]
        uniq, inv = np.unique(e.row, return_inverse=True)
        rows_u = torch.as_tensor(uniq, device=device)
        logits = logits_at_rows(model, ids, pos, _mask_for(mb, device, backend), rows_u).to(out.dtype)
        rows = torch.as_tensor(inv, device=device)
        targets = torch.as_tensor(e.target, device=device)
        out[torch.as_tensor(e.index, device=device)] = sampling_logprobs(logits, rows, targets, temperature, top_p)[0]
    lengths = [len(ix) - 1 for ix in forest.branch_index]
    return list(out.split(lengths))
