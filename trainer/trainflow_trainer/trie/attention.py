"""Tree attention backends (the model's `AttentionMask` protocol) for packed micro-batches (B = 1).

The rule: packed token i may attend to token j iff j ≤ i < subtree_end[j], i.e. j is i or an ancestor.

- `DenseTreeMask`: the rule as an [N, N] boolean mask. O(N²) work and memory, which for a bushy tree exceeds
  the flat layout's Σ(branch length)²; the reference for tests only.
- `SegmentTreeMask`: the CPU training path. Consecutive tokens where each is the child of the one before form
  a segment (a chain; DFS puts a node's first child right after it). A segment's queries see the segment's
  ancestor path (a few contiguous slices of earlier segments) plus themselves causally. So each segment costs
  one causal flash-attention call over its own tokens plus one unmasked call over its gathered ancestor keys
  (shared by all segments with the same ancestors), merged by log-sum-exp: only visible (query, key) pairs
  are computed. A tree with no branching is a single segment: exactly the flat (varlen) computation.
- `FlexTreeMask`: the GPU path: FlexAttention with the rule as `mask_mod` over a BlockMask, so fully
  masked 128×128 blocks are skipped. (With torch 2.15 FlexAttention has no backward on CPU: it raises
  "FlexAttention does not support backward on CPU", hence the segment path there.)
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ..attention import attend_with_bool_mask, expand_kv

# Index arrays as the packer makes them (numpy) or as tests pass them.
IndexLike = np.ndarray | Tensor | Sequence[int]


def _as_index(x: IndexLike, device: torch.device | str | None = None) -> Tensor:
    t = torch.as_tensor(np.asarray(x) if not isinstance(x, Tensor) else x, dtype=torch.long)
    return t.to(device) if device is not None else t


class DenseTreeMask:
    """Reference: allowed[i, j] = j ≤ i < subtree_end[j] as a dense mask (tests only)."""

    def __init__(self, subtree_end: IndexLike) -> None:
        self.subtree_end = _as_index(subtree_end)

    def allowed(self, device: torch.device | str | None = None) -> Tensor:
        se = self.subtree_end.to(device) if device is not None else self.subtree_end
        n = se.shape[-1]
        i = torch.arange(n, device=se.device)[:, None]
        j = torch.arange(n, device=se.device)[None, :]
        return (j <= i) & (i < se[None, :])

    def attend(self, q: Tensor, k: Tensor, v: Tensor, scale: float) -> Tensor:
        _check_packed(q, k, len(self.subtree_end))
        return attend_with_bool_mask(q, k, v, self.allowed(q.device)[None, None], scale)


def segments_from_parents(parent: np.ndarray) -> list[tuple[int, int, list[tuple[int, int]]]]:
    """[(start, end, ancestor slices)] per segment; ancestor slices are [s, e) ranges, root first."""
    parent = np.asarray(parent)
    n = len(parent)
    continues = parent == np.arange(n) - 1
    continues[:1] = False  # token 0 always starts a segment (its parent -1 equals "0 - 1")
    starts = np.nonzero(~continues)[0]
    ends = np.r_[starts[1:], n]
    seg_of = np.repeat(np.arange(len(starts)), ends - starts)  # segment number of every token
    out = []
    for a, b in zip(starts.tolist(), ends.tolist()):
        anc: list[tuple[int, int]] = []
        p = int(parent[a])
        while p >= 0:
            s = int(starts[seg_of[p]])
            anc.append((s, p + 1))
            p = int(parent[s])
        out.append((a, b, anc[::-1]))
    return out


class SegmentTreeMask:
    """Tree attention on CPU: per segment, causal attention over its own tokens plus full attention over its
    gathered ancestor keys, merged by log-sum-exp (see `_SegmentAttention`).

    Splitting a segment's keys into "ancestors" (every query sees all of them: no mask) and "own" (plain
    causal, Tq == Tk) means no key a query may not see is ever computed, where one masked call over
    [ancestors ‖ own] would compute and discard the (b-a)²/2 upper triangle. Segments whose ancestor paths
    are identical (siblings forking at the same token, e.g. the answers of a GRPO group) share one call
    over their concatenated queries. A micro-batch of unrelated chains (the flat layout) is one causal call
    per chain, exactly varlen attention.
    """

    def __init__(self, parent: IndexLike) -> None:
        parents = np.asarray(parent.cpu() if isinstance(parent, Tensor) else parent, dtype=np.int64)
        self.n = len(parents)
        self.segments = segments_from_parents(parents)
        self.own = [(a, b) for a, b, _ in self.segments]
        by_ancestors: dict[tuple[tuple[int, int], ...], list[tuple[int, int]]] = {}
        for a, b, anc in self.segments:
            if anc:
                by_ancestors.setdefault(tuple(anc), []).append((a, b))
        # (query rows, ancestor key rows) per group; a slice where the rows are contiguous, else an index.
        self.groups = [(_rows(members), _rows(list(anc))) for anc, members in by_ancestors.items()]
        self._masks: dict[tuple[int, int, torch.device], Tensor] = {}

    def attend(self, q: Tensor, k: Tensor, v: Tensor, scale: float) -> Tensor:
        _check_packed(q, k, self.n)
        if q.device.type != "cpu":
            return self._attend_masked(q, k, v, scale)
        return _SegmentAttention.apply(q, k, v, self, scale)

    def _attend_masked(self, q: Tensor, k: Tensor, v: Tensor, scale: float) -> Tensor:
        """Any device: one masked SDPA per segment over [ancestors ‖ own] (slower; CPU uses the merge)."""
        k, v = expand_kv(q, k, v)
        outs = []
        for a, b, anc in self.segments:
            ks = torch.cat([k[:, :, s:e] for s, e in anc] + [k[:, :, a:b]], dim=2)
            vs = torch.cat([v[:, :, s:e] for s, e in anc] + [v[:, :, a:b]], dim=2)
            key = (b - a, ks.shape[2], q.device)
            if key not in self._masks:  # query i is key tk - tq + i: it sees every key up to itself
                self._masks[key] = torch.ones(b - a, ks.shape[2], dtype=torch.bool, device=q.device).tril(
                    ks.shape[2] - (b - a)
                )
            outs.append(F.scaled_dot_product_attention(q[:, :, a:b], ks, vs, attn_mask=self._masks[key], scale=scale))
        return torch.cat(outs, dim=2)


def _rows(ranges: list[tuple[int, int]]) -> slice | Tensor:
    """Token rows covered by [s, e) ranges: a slice when they are contiguous (a view, no copy)."""
    if all(ranges[i][1] == ranges[i + 1][0] for i in range(len(ranges) - 1)):
        return slice(ranges[0][0], ranges[-1][1])
    return torch.as_tensor(np.concatenate([np.arange(s, e) for s, e in ranges]), dtype=torch.long)


def _take(x: Tensor, rows: slice | Tensor) -> Tensor:
    return x[:, :, rows] if isinstance(rows, slice) else x.index_select(2, rows)


def _add_at(x: Tensor, rows: slice | Tensor, value: Tensor) -> None:
    if isinstance(rows, slice):
        x[:, :, rows] += value
    else:
        x.index_add_(2, rows, value)


# The CPU flash-attention kernels behind F.scaled_dot_product_attention, called directly for the
# log-sum-exp they return (forward) and accept (backward). Both take grouped-query k/v as they are.
_flash = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu
_flash_backward = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu_backward


class _SegmentAttention(torch.autograd.Function):
    """out = softmax over (ancestor keys ∪ own causal keys), computed as two flash calls merged by LSE:

        L = logaddexp(L_own, L_anc),  out = out_own·exp(L_own - L) + out_anc·exp(L_anc - L)

    Backward runs the flash backward of each part with the MERGED out and L (as ring attention does): the
    kernel forms P = exp(s - L) and D = rowsum(dout·out), so each part yields exactly its share of dq and its
    keys' dk, dv. Gradients land in one buffer per tensor (no per-segment slice backward, which would
    allocate an N-row zero tensor per segment)."""

    @staticmethod
    def forward(ctx: Any, q: Tensor, k: Tensor, v: Tensor, plan: SegmentTreeMask, scale: float) -> Tensor:
        out = torch.empty_like(q)
        # the kernel's log-sum-exp is float32 for float32/bf16/fp16 inputs (float64 for float64)
        lse = q.new_empty(q.shape[:3], dtype=torch.promote_types(q.dtype, torch.float32))
        for a, b in plan.own:
            o, lo = _flash(q[:, :, a:b], k[:, :, a:b], v[:, :, a:b], 0.0, True, scale=scale)[:2]
            out[:, :, a:b] = o
            lse[:, :, a:b] = lo
        for rows, keys in plan.groups:
            o1, l1 = _flash(_take(q, rows), _take(k, keys), _take(v, keys), 0.0, False, scale=scale)[:2]
            # The merge in place: o0/l0 are views of out/lse for a slice of rows (a copy for an index), o1/l1
            # the kernel's fresh outputs; only `merged` and one weight vector are allocated.
            o0, l0 = _take(out, rows), _take(lse, rows)
            merged = torch.logaddexp(l0, l1)
            o0.mul_(torch.sub(l0, merged).exp_()[..., None]).add_(o1.mul_(l1.sub_(merged).exp_()[..., None]))
            if isinstance(rows, slice):
                l0.copy_(merged)
            else:
                out.index_copy_(2, rows, o0)
                lse.index_copy_(2, rows, merged)
        ctx.save_for_backward(q, k, v, out, lse)
        ctx.plan, ctx.scale = plan, scale
        return out

    @staticmethod
    def backward(ctx: Any, dout: Tensor) -> tuple[Tensor, Tensor, Tensor, None, None]:
        q, k, v, out, lse = ctx.saved_tensors
        plan, scale = ctx.plan, ctx.scale
        dout = dout.contiguous()
        # The own segments tile [0, n), so their gradients are written (no zero-fill, no add); the ancestor
        # groups then add theirs.
        dq, dk, dv = torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)
        for a, b in plan.own:
            s = slice(a, b)
            g = _flash_backward(
                dout[:, :, s], q[:, :, s], k[:, :, s], v[:, :, s], out[:, :, s], lse[:, :, s], 0.0, True, scale=scale
            )
            dq[:, :, s] = g[0]
            dk[:, :, s] = g[1]
            dv[:, :, s] = g[2]
        for rows, keys in plan.groups:
            g = _flash_backward(
                _take(dout, rows),
                _take(q, rows),
                _take(k, keys),
                _take(v, keys),
                _take(out, rows),
                _take(lse, rows),
                0.0,
                False,
                scale=scale,
            )
            _add_at(dq, rows, g[0])
            _add_at(dk, keys, g[1])
            _add_at(dv, keys, g[2])
        return dq, dk, dv, None, None


@functools.cache
def _compiled_flex() -> Callable[..., Tensor]:
    from torch.nn.attention.flex_attention import flex_attention

    # Default dynamism: the first shape compiles static, a second one recompiles with a symbolic length,
    # so micro-batches of different sizes (padded to multiples of 128) do not recompile each time.
    return torch.compile(flex_attention)


class FlexTreeMask:
    """FlexAttention over a BlockMask built from the tree rule (GPU; pad N to a multiple of 128)."""

    def __init__(self, subtree_end: IndexLike, device: torch.device | str) -> None:
        from torch.nn.attention.flex_attention import create_block_mask

        se = _as_index(subtree_end, device)
        self.n = len(se)

        def tree_rule(b: Tensor, h: Tensor, q_idx: Tensor, kv_idx: Tensor) -> Tensor:
            return (kv_idx <= q_idx) & (q_idx < se[kv_idx])

        # On GPU build the BlockMask compiled, block by block: a 32k-token micro-batch would otherwise
        # materialise a 1 GiB dense [N, N] mask first.
        self.block_mask = create_block_mask(
            tree_rule, None, None, self.n, self.n, device=str(device), _compile=torch.device(device).type == "cuda"
        )

    def attend(self, q: Tensor, k: Tensor, v: Tensor, scale: float) -> Tensor:
        _check_packed(q, k, self.n)
        return _compiled_flex()(q, k, v, block_mask=self.block_mask, scale=scale, enable_gqa=q.shape[1] != k.shape[1])


def _check_packed(q: Tensor, k: Tensor, n: int) -> None:
    if q.shape[0] != 1 or q.shape[2] != n or k.shape[2] != n:
        raise ValueError(
            f"tree masks take one packed micro-batch (B=1, T={n}); got q {tuple(q.shape)}, k {tuple(k.shape)}"
        )
