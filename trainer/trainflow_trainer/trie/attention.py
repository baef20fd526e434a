"""Tree attention backends (the model's `AttentionMask` protocol) for packed micro-batches (B = 1).

The rule: packed token i may attend to token j iff j ≤ i < subtree_end[j], i.e. j is i or an ancestor.

- `DenseTreeMask`: the rule as an [N, N] boolean mask. O(N²) work and memory, which for a bushy tree exceeds
  the flat layout's Σ(branch length)²; the reference for tests only.
- `SegmentTreeMask`: the CPU training path. Consecutive tokens where each is the child of the one before form
  a segment (a chain; DFS puts a node's first child right after it). A segment's queries see the segment's
  ancestor path (a few contiguous slices of earlier segments) plus themselves causally, so each segment is
  one SDPA call over [ancestor keys ‖ own keys] with a lower-right causal mask, and masked blocks cost
  nothing. A tree with no branching is a single segment: exactly the flat (varlen) computation.
- `FlexTreeMask`: the GPU path: FlexAttention with the rule as `mask_mod` over a BlockMask, so fully
  masked 128×128 blocks are skipped. (With torch 2.15 FlexAttention has no backward on CPU: it raises
  "FlexAttention does not support backward on CPU", hence the segment path there.)
"""

from __future__ import annotations

import functools

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ..attention import attend_with_bool_mask, expand_kv


def _as_index(x, device=None) -> Tensor:
    t = torch.as_tensor(np.asarray(x) if not isinstance(x, Tensor) else x, dtype=torch.long)
    return t.to(device) if device is not None else t


class DenseTreeMask:
    """Reference: allowed[i, j] = j ≤ i < subtree_end[j] as a dense mask (tests only)."""

    def __init__(self, subtree_end):
        self.subtree_end = _as_index(subtree_end)

    def allowed(self, device=None) -> Tensor:
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
    """Tree attention as one SDPA call per segment over its gathered ancestor keys/values (see module doc)."""

    def __init__(self, parent):
        parent = np.asarray(parent.cpu() if isinstance(parent, Tensor) else parent, dtype=np.int64)
        self.n = len(parent)
        self.segments = segments_from_parents(parent)
        self._masks: dict[tuple[int, int, torch.device], Tensor] = {}

    def _lower_right_causal(self, tq: int, tk: int, device: torch.device) -> Tensor:
        key = (tq, tk, device)
        m = self._masks.get(key)
        if m is None:  # query i is key tk - tq + i: it sees every key up to itself
            m = torch.ones(tq, tk, dtype=torch.bool, device=device).tril(tk - tq)
            self._masks[key] = m
        return m

    def attend(self, q: Tensor, k: Tensor, v: Tensor, scale: float) -> Tensor:
        _check_packed(q, k, self.n)
        k, v = expand_kv(q, k, v)
        if len(self.segments) == 1:
            return F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=scale)
        outs = []
        for a, b, anc in self.segments:
            qs = q[:, :, a:b]
            if not anc:
                outs.append(F.scaled_dot_product_attention(qs, k[:, :, a:b], v[:, :, a:b], is_causal=True, scale=scale))
                continue
            ks = torch.cat([k[:, :, s:e] for s, e in anc] + [k[:, :, a:b]], dim=2)
            vs = torch.cat([v[:, :, s:e] for s, e in anc] + [v[:, :, a:b]], dim=2)
            mask = self._lower_right_causal(b - a, ks.shape[2], q.device)
            outs.append(F.scaled_dot_product_attention(qs, ks, vs, attn_mask=mask, scale=scale))
        return torch.cat(outs, dim=2)


@functools.cache
def _compiled_flex():
    from torch.nn.attention.flex_attention import flex_attention

    # Default dynamism: the first shape compiles static, a second one recompiles with a symbolic length,
    # so micro-batches of different sizes (padded to multiples of 128) do not recompile each time.
    return torch.compile(flex_attention)


class FlexTreeMask:
    """FlexAttention over a BlockMask built from the tree rule (GPU; pad N to a multiple of 128)."""

    def __init__(self, subtree_end, device: torch.device | str):
        from torch.nn.attention.flex_attention import create_block_mask

        se = _as_index(subtree_end, device)
        self.n = len(se)

        def tree_rule(b, h, q_idx, kv_idx):
            return (kv_idx <= q_idx) & (q_idx < se[kv_idx])

        # On GPU build the BlockMask compiled, block by block: a 32k-token micro-batch would otherwise
        # materialise a 1 GiB dense [N, N] mask first.
        self.block_mask = create_block_mask(tree_rule, None, None, self.n, self.n, device=str(device),
                                            _compile=torch.device(device).type == "cuda")

    def attend(self, q: Tensor, k: Tensor, v: Tensor, scale: float) -> Tensor:
        _check_packed(q, k, self.n)
        return _compiled_flex()(q, k, v, block_mask=self.block_mask, scale=scale, enable_gqa=q.shape[1] != k.shape[1])


def _check_packed(q: Tensor, k: Tensor, n: int) -> None:
    if q.shape[0] != 1 or q.shape[2] != n or k.shape[2] != n:
        raise ValueError(
            f"tree masks take one packed micro-batch (B=1, T={n}); got q {tuple(q.shape)}, k {tuple(k.shape)}"
        )
