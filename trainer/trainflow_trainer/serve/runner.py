"""Binds the trainer's `Transformer` to the engine: prefill one sequence, decode many sequences at once.

Batched decoding is what makes a CPU server worth having: a decode step of the tiny model costs ~6 ms at
batch 1, almost all of it per-op overhead, and about the same at batch 8. So the engine steps every waiting
generation together, and their key/value caches live side by side in one `SlotKV` store:
per layer one tensor [slots, kv heads, capacity, head dim]; a generation owns a slot, and its cache is
positions 0..length-1 of that slot. A decode step writes each new key at its slot's length, attends over
positions 0..max length with a per-row length mask, and copies nothing when the active slots are contiguous.
"""

from __future__ import annotations

import threading

import torch
from torch import Tensor

from ..attention import DenseMask
from ..model import KVCache, Transformer


class SlotKV:
    """Key/value caches of many sequences in shared tensors; `update` is the model's KV-cache hook."""

    def __init__(self, num_layers: int, kv_heads: int, head_dim: int, dtype: torch.dtype,
                 slots: int = 8, capacity: int = 256):
        self.num_layers, self.kv_heads, self.head_dim, self.dtype = num_layers, kv_heads, head_dim, dtype
        self.k = [torch.zeros(slots, kv_heads, capacity, head_dim, dtype=dtype) for _ in range(num_layers)]
        self.v = [torch.zeros_like(t) for t in self.k]
        self.lengths = [0] * slots
        self._free = list(range(slots - 1, -1, -1))
        self._lock = threading.Lock()  # alloc/release come from request threads; tensors only from the stepper
        self._rows: Tensor | None = None  # set by `decoding` for one forward pass
        self._cols: Tensor | None = None
        self._span = (0, 0)

    @property
    def slots(self) -> int:
        return self.k[0].shape[0]

    @property
    def capacity(self) -> int:
        return self.k[0].shape[2]

    # ---- slots ----------------------------------------------------------------------------------------
    def alloc(self) -> int:
        with self._lock:
            if not self._free:
                self._grow(slots=2 * self.slots)
            slot = self._free.pop()
            self.lengths[slot] = 0
            return slot

    def release(self, slot: int) -> None:
        with self._lock:
            self.lengths[slot] = 0
            self._free.append(slot)
            self._free.sort(reverse=True)  # lowest slots first: keeps the active ones contiguous (no copy)

    def _grow(self, slots: int | None = None, capacity: int | None = None) -> None:
        s, c = slots or self.slots, capacity or self.capacity
        for store in (self.k, self.v):
            for i, old in enumerate(store):
                new = torch.zeros(s, self.kv_heads, c, self.head_dim, dtype=self.dtype)
                new[: old.shape[0], :, : old.shape[2]] = old
                store[i] = new
        self._free = sorted(set(self._free) | set(range(len(self.lengths), s)), reverse=True)
        self.lengths += [0] * (s - len(self.lengths))

    def ensure_capacity(self, length: int) -> None:
        if length > self.capacity:
            cap = self.capacity
            while cap < length:
                cap *= 2
            with self._lock:
                self._grow(capacity=cap)

    # ---- filling and decoding -------------------------------------------------------------------------
    def store(self, slot: int, cache: KVCache) -> None:
        """Copies a prefill's cache into `slot` (replacing what it held)."""
        n = cache.length
        self.ensure_capacity(n)
        for layer, kv in enumerate(cache.layers):
            assert kv is not None
            self.k[layer][slot, :, :n] = kv[0][0]
            self.v[layer][slot, :, :n] = kv[1][0]
        self.lengths[slot] = n

    def decoding(self, slots: list[int]) -> tuple[Tensor, DenseMask]:
        """Prepares one decode step of `slots`: returns (position ids [B, 1], the length mask)."""
        pos = [self.lengths[s] for s in slots]
        span = max(pos) + 1
        self.ensure_capacity(span)
        self._rows = torch.tensor(slots, dtype=torch.long)
        self._cols = torch.tensor(pos, dtype=torch.long)
        contiguous = slots == list(range(slots[0], slots[0] + len(slots)))
        self._span = (slots[0], span) if contiguous else (-1, span)
        allowed = torch.arange(span)[None, None, :] <= self._cols[:, None, None]  # [B, 1, span]
        return self._cols[:, None], DenseMask(allowed)

    def update(self, layer: int, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        """The model's hook during a decode step: k, v [B, kv heads, 1, D] → the keys/values to attend over."""
        assert self._rows is not None and self._cols is not None, "call decoding() before the forward pass"
        self.k[layer][self._rows, :, self._cols] = k[:, :, 0]
        self.v[layer][self._rows, :, self._cols] = v[:, :, 0]
        first, span = self._span
        if first >= 0:
            b = len(self._rows)
            return self.k[layer][first:first + b, :, :span], self.v[layer][first:first + b, :, :span]
        return (self.k[layer][:, :, :span].index_select(0, self._rows),
                self.v[layer][:, :, :span].index_select(0, self._rows))

    def advance(self, slots: list[int]) -> None:
        for s in slots:
            self.lengths[s] += 1
        self._rows = self._cols = None


class TransformerRunner:
    def __init__(self, model: Transformer):
        self.model = model.eval()
        self.vocab_size = model.config.vocab_size

    def new_kv(self) -> SlotKV:
        cfg = self.model.config
        dtype = next(self.model.parameters()).dtype
        return SlotKV(cfg.num_hidden_layers, cfg.num_key_value_heads, cfg.head_dim, dtype)

    @torch.inference_mode()
    def prefill(self, ids: list[int], kv: SlotKV, slot: int) -> Tensor:
        """Runs `ids` from position 0 into `slot`; returns the logits of the last position [V] fp32."""
        cache = KVCache(self.model.config.num_hidden_layers)
        logits = self.model(torch.tensor([ids], dtype=torch.long), kv_cache=cache)
        kv.store(slot, cache)
        return logits[0, -1].float()

    @torch.inference_mode()
    def decode(self, tokens: list[int], kv: SlotKV, slots: list[int]) -> Tensor:
        """Feeds token b at the end of slot b's cache, for all b at once; returns logits [B, V] fp32."""
        positions, mask = kv.decoding(slots)
        logits = self.model(torch.tensor(tokens, dtype=torch.long)[:, None], position_ids=positions,
                            attention=mask, kv_cache=kv)  # type: ignore[arg-type]
        kv.advance(slots)
        return logits[:, -1].float()
