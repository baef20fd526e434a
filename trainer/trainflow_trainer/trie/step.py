"""The trainer's entry: forward + backward over a batch of trajectories, trie-packed or flat.

    metrics = packed_forward_backward(model, trajectories, loss_spec, max_tokens)   # packing.mode: trie
    metrics = flat_forward_backward(model, trajectories, loss_spec, max_tokens)     # packing.mode: flat
    optimizer.step()

Both accumulate into `.grad` (call `optimizer.zero_grad()` before) and return plain-float metrics. They share
everything but prefix sharing: flat packs each trajectory as its own chain-shaped tree into the same
micro-batches (varlen packing, no padding, one causal attention call per sequence), so the comparison
isolates what sharing buys, and input without shared prefixes yields bit-identical results in both modes.

Several ranks (FSDP2): every rank passes the same global batch and `rank`/`world`; every rank builds the same
forest and micro-batches, takes its share (distribute.py, balanced by token count), and runs as many
forward/backward passes as the busiest rank — padding with an empty, zero-weight pass — so every rank joins
every all-gather and reduce-scatter. The loss coefficients are the global batch's, so the gradients FSDP sums
over ranks are the one-process ones, and the metrics are summed over ranks before they are returned.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch

from ..attention import AttentionMask
from .attention import FlexTreeMask, SegmentTreeMask
from .builder import Trajectory, build_forest
from .distribute import assign_to_ranks, pack_for_ranks, padded_count
from .losses import LossSpec, TokenStats, entry_coefficients, entry_logprobs, token_losses
from .packer import LossEntries, MicroBatch, loss_entries, pack

# "segment", "flex", or a factory MicroBatch -> AttentionMask (benchmarks plug other backends in here)
Backend = str | Callable[[MicroBatch], AttentionMask]


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
    under_fsdp = getattr(model, FSDP_ROWS_METHOD, None)
    if under_fsdp is not None:
        return under_fsdp(ids, pos, mask, rows)
    return _logits_at_rows(model, ids, pos, mask, rows)


FSDP_ROWS_METHOD = "trainflow_logits_at_rows"


def register_under_fsdp(model: torch.nn.Module) -> None:
    """Lets logits_at_rows run through a model sharded with fully_shard: the root's parameters (embeddings,
    final norm, LM head) are all-gathered by FSDP's forward hooks, which by default run only around
    `forward`, so the rows-only forward is registered as a second forward method of the root."""
    from torch.distributed.fsdp import register_fsdp_forward_method

    def rows_forward(ids: torch.Tensor, pos: torch.Tensor, mask: AttentionMask, rows: torch.Tensor) -> torch.Tensor:
        return _logits_at_rows(model, ids, pos, mask, rows)

    setattr(model, FSDP_ROWS_METHOD, rows_forward)
    register_fsdp_forward_method(model, FSDP_ROWS_METHOD)


def _logits_at_rows(
    model: torch.nn.Module, ids: torch.Tensor, pos: torch.Tensor, mask: AttentionMask, rows: torch.Tensor
) -> torch.Tensor:
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
    rank: int = 0,
    world: int = 1,
) -> dict[str, float]:
    """Trie mode. attention: "auto" (flex on CUDA, segment elsewhere), "segment", "flex", or a callable
    MicroBatch -> AttentionMask. rank/world: this process's share of the micro-batches (module docstring);
    every rank passes the same trajectories."""
    param = next(model.parameters())
    device = param.device
    backend = attention if attention != "auto" else ("flex" if device.type == "cuda" else "segment")
    forest = build_forest(trajectories, share_prefixes=share_prefixes)
    entries = loss_entries(forest)
    weights = np.asarray([br.weight for br in forest.branches])
    coef_all = entry_coefficients(entries.mask, entries.branch, weights, loss_spec)
    adv_all = np.asarray([br.advantage for br in forest.branches])
    pad_multiple = 128 if backend == "flex" else 1
    batches = pack_for_ranks(forest, max_tokens, world, pad_multiple=pad_multiple, entries=entries)
    assignment = assign_to_ranks(batches, world)
    mine = [batches[i] for i in assignment[rank]]
    passes = padded_count(assignment) if world > 1 else len(mine)

    loss_dtype = param.dtype if param.dtype == torch.float64 else torch.float32
    acc = _Totals()
    for k in range(passes):
        mb = mine[k] if k < len(mine) else _empty_pass(pad_multiple)
        e = mb.entries
        ids = torch.as_tensor(mb.input_ids, device=device)[None]
        pos = torch.as_tensor(mb.position_ids, device=device)[None]
        mask = _mask_for(mb, device, backend)
        set_gradient_sync(model, k == passes - 1)
        if len(e) == 0:
            if world > 1:  # nothing trained here, but the collectives must pair up across ranks
                logits = logits_at_rows(model, ids, pos, mask, torch.zeros(1, dtype=torch.long, device=device))
                if backward:
                    (logits.sum() * 0.0).backward()  # a zero contribution to every gradient
            continue
        t = lambda a, dt=loss_dtype: torch.as_tensor(a, device=device, dtype=dt)  # noqa: E731
        uniq, inv = np.unique(e.row, return_inverse=True)  # rows shared by several branches: one logit row
        logits = logits_at_rows(model, ids, pos, mask, t(uniq, torch.long)).to(loss_dtype)
        rows, targets = t(inv, torch.long), t(e.target, torch.long)
        logp, entropy = entry_logprobs(
            logits, rows, targets, loss_spec.temperature, loss_spec.top_p, with_entropy=loss_spec.entropy_coef != 0.0
        )
        prox = t(e.prox_logprob) if loss_spec.decoupled else None
        ell, stats = token_losses(
            loss_spec, logp, t(e.old_logprob), t(adv_all[e.branch]), t(e.ref_logprob), entropy, prox
        )
        loss = (t(coef_all[e.index]) * ell).sum()
        if backward:
            loss.backward()
        acc.add(float(loss.detach()), t(e.mask), logp.detach(), stats)
    if world > 1:
        acc.all_reduce(device)
    metrics = {
        "loss_tokens": float(len(entries)),
        "total_tokens": float(forest.total_tokens),
        "unique_tokens": float(forest.unique_tokens),
        "packed_tokens": float(sum(len(mb) for mb in batches)),  # unique + recomputed root paths (+ padding)
        "micro_batches": float(len(batches)),
        "passes_per_rank": float(passes),
        **acc.metrics(float(entries.mask.sum()), loss_spec),
    }
    versions = np.concatenate([br.versions for br in forest.branches])
    metrics["policy_version_min"] = float(versions.min())
    metrics["policy_version_max"] = float(versions.max())
    return metrics


def _empty_pass(pad_multiple: int) -> MicroBatch:
    """A pass that trains nothing: a chain of padding tokens (token 0), no loss entries."""
    n = max(1, pad_multiple)
    parent = np.arange(-1, n - 1)
    none = np.zeros(0, dtype=np.int64)
    entries = LossEntries(*(none for _ in LossEntries.__dataclass_fields__))
    return MicroBatch(
        nodes=np.full(n, -1),
        input_ids=np.zeros(n, dtype=np.int64),
        position_ids=np.arange(n),
        parent=parent,
        subtree_end=np.full(n, n),
        entries=entries,
    )


def set_gradient_sync(model: torch.nn.Module, last: bool) -> None:
    """Under FSDP, reduce-scatter only in the last pass's backward (earlier passes accumulate locally); a
    no-op on a plain module. The flat LM step (train.py) uses it too."""
    setter = getattr(model, "set_requires_gradient_sync", None)
    if setter is not None:
        setter(last)


_SUM_KEYS = ("clip_low", "clip_high", "logprob", "ratio", "behav_weight", "kl", "entropy")


class _Totals:
    """Mask-weighted sums over the trained tokens of a batch, turned into the step's objective metrics."""

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
        """Sums (and maxima) over ranks, in one fixed order on every rank."""
        import torch.distributed as dist

        sums = torch.tensor([self.loss, *(self.sums.get(k, 0.0) for k in _SUM_KEYS)], dtype=torch.float64)
        maxima = torch.tensor([self.ratio_max, self.weight_max], dtype=torch.float64)
        sums, maxima = sums.to(device), maxima.to(device)
        dist.all_reduce(sums, op=dist.ReduceOp.SUM)
        dist.all_reduce(maxima, op=dist.ReduceOp.MAX)
        values = sums.cpu().tolist()
        self.loss = values[0]
        self.sums = dict(zip(_SUM_KEYS, values[1:]))
        self.ratio_max, self.weight_max = maxima.cpu().tolist()

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
    rank: int = 0,
    world: int = 1,
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
        rank=rank,
        world=world,
    )


def forward_backward(
    packing: dict,
    model: torch.nn.Module,
    trajectories: Sequence[Trajectory],
    loss_spec: LossSpec,
    *,
    rank: int = 0,
    world: int = 1,
) -> dict[str, float]:
    """Dispatch on the config's `packing: {mode: trie | flat, max_tokens}` block; rank/world: as
    packed_forward_backward (this process's share when several ranks train the batch)."""
    mode = packing.get("mode", "trie")
    max_tokens = packing.get("max_tokens")
    if not isinstance(max_tokens, int) or max_tokens <= 0:
        raise ValueError(f"packing.max_tokens must be a positive integer, got {max_tokens!r}")
    if mode == "trie":
        return packed_forward_backward(model, trajectories, loss_spec, max_tokens, rank=rank, world=world)
    if mode == "flat":
        return flat_forward_backward(model, trajectories, loss_spec, max_tokens, rank=rank, world=world)
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
        logp = entry_logprobs(logits, rows, targets, temperature, top_p, with_entropy=False)[0]
        out[torch.as_tensor(e.index, device=device)] = logp
    lengths = [len(ix) - 1 for ix in forest.branch_index]
    return list(out.split(lengths))
