"""Attention backends: who may attend to whom.

The model never builds masks itself. Each forward pass is handed an object implementing `AttentionMask`,
and every attention layer calls `mask.attend(q, k, v, scale)`. That single seam lets one model serve plain
causal LM, document-packed mid-training (`DocumentMask`), arbitrary dense masks (`DenseMask`) and the
trie-packing engineer's tree masks (`trie/attention.py`) without touching the model code.

Shapes: q is [B, Hq, Tq, D]; k and v are [B, Hkv, Tk, D] with Hq a multiple of Hkv (grouped-query
attention: each key/value head serves Hq/Hkv consecutive query heads, as in HF's `repeat_kv`). Tq == Tk
in training; with a KV cache Tk >= Tq and the queries are the last Tq positions.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch
import torch.nn.functional as F
from torch import Tensor


@runtime_checkable
class AttentionMask(Protocol):
    def attend(self, q: Tensor, k: Tensor, v: Tensor, scale: float) -> Tensor:
        """Returns the attention output [B, Hq, Tq, D]."""
        ...


def expand_kv(q: Tensor, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
    """Repeats each key/value head for the query heads it serves (GQA → MHA layout)."""
    hq, hkv = q.shape[1], k.shape[1]
    if hq % hkv != 0:
        raise ValueError(f"query heads ({hq}) must be a multiple of key/value heads ({hkv})")
    if hq == hkv:
        return k, v
    rep = hq // hkv
    return k.repeat_interleave(rep, dim=1), v.repeat_interleave(rep, dim=1)


def attend_with_bool_mask(q: Tensor, k: Tensor, v: Tensor, allowed: Tensor, scale: float) -> Tensor:
    """SDPA with a boolean mask (True = may attend) broadcastable to [B, H, Tq, Tk].

    Masked scores are -inf, so their softmax weights are exactly zero and so is their gradient: a token
    receives no gradient from a position it may not see (the document-mask test relies on this).
    Every query row must allow at least one key (its own position), or SDPA returns NaN for that row.
    """
    k, v = expand_kv(q, k, v)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=allowed, scale=scale)


def causal_allowed(tq: int, tk: int, device: torch.device) -> Tensor:
    """[Tq, Tk] bool: query i (absolute position tk - tq + i) sees keys 0..its own position."""
    qpos = torch.arange(tk - tq, tk, device=device)[:, None]
    kpos = torch.arange(tk, device=device)[None, :]
    return kpos <= qpos


class CausalMask:
    """Every token sees itself and everything before it."""

    def attend(self, q: Tensor, k: Tensor, v: Tensor, scale: float) -> Tensor:
        tq, tk = q.shape[2], k.shape[2]
        if tq == tk:
            k, v = expand_kv(q, k, v)
            return F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=scale)
        return attend_with_bool_mask(q, k, v, causal_allowed(tq, tk, q.device), scale)


class DocumentMask:
    """Packed sequences: causal within a document, nothing across documents.

    doc_ids[B, T] holds a document number per token; tokens attend to earlier tokens with the same id.
    (Ids need not be contiguous: the rule is equality, so padding can carry its own id.)
    """

    def __init__(self, doc_ids: Tensor):
        if doc_ids.dim() != 2:
            raise ValueError(f"DocumentMask expects doc_ids [B, T], got shape {tuple(doc_ids.shape)}")
        self.doc_ids = doc_ids

    def allowed(self) -> Tensor:
        """[B, T, T] bool, True where query i may attend key j."""
        t = self.doc_ids.shape[1]
        same_doc = self.doc_ids[:, :, None] == self.doc_ids[:, None, :]
        return same_doc & causal_allowed(t, t, self.doc_ids.device)[None]

    def attend(self, q: Tensor, k: Tensor, v: Tensor, scale: float) -> Tensor:
        if q.shape[2] != k.shape[2] or q.shape[2] != self.doc_ids.shape[1]:
            raise ValueError("DocumentMask is for training passes without a KV cache (Tq == Tk == T)")
        return attend_with_bool_mask(q, k, v, self.allowed()[:, None], scale)


class DenseMask:
    """An explicit boolean mask allowed[B, Tq, Tk] (True = may attend). Each row must allow some key."""

    def __init__(self, allowed: Tensor):
        if allowed.dim() != 3 or allowed.dtype != torch.bool:
            raise ValueError(f"DenseMask expects a bool tensor [B, Tq, Tk], got {allowed.dtype} {tuple(allowed.shape)}")
        self.allowed = allowed

    def attend(self, q: Tensor, k: Tensor, v: Tensor, scale: float) -> Tensor:
        return attend_with_bool_mask(q, k, v, self.allowed[:, None], scale)
