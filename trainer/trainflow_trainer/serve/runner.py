"""Binds the trainer's `Transformer` to the engine: prefill one sequence, decode many sequences at once.

Batched decoding is what makes a CPU server worth having: a decode step of the tiny model costs ~6 ms at
batch 1, almost all of it per-op overhead, and about the same at batch 8. So the engine steps every waiting
generation together, and their key/value caches live side by side in one `SlotKV` store:
per layer one tensor [slots, kv heads, capacity, head dim]; a generation owns a slot, and its cache is
positions 0..length-1 of that slot. A decode step writes each new key at its slot's length, attends over
positions 0..max length with a per-row length mask, and copies nothing when the active slots are contiguous.

Prefix reuse: the store remembers which tokens each slot holds, and keeps the slots of finished generations
(least recently used first out). A prefill copies the longest cached prefix of its prompt from any slot and
runs only the rest — an agent's next turn extends its previous prompt and answer, and every first turn
shares the system prompt, so most prompt tokens are never recomputed. A slot's keys depend only on its
tokens and the weights, and each store belongs to one set of weights (a swap makes a new store).
"""

from __future__ import annotations

import threading
from collections import OrderedDict

import torch
from torch import Tensor

from ..attention import DenseMask
from ..model import Transformer
from .engine import KVStore


class SlotKV:
    """Key/value caches of many sequences in shared tensors; `update` is the model's KV-cache hook."""

    def __init__(
        self,
        num_layers: int,
        kv_heads: int,
        head_dim: int,
        dtype: torch.dtype,
        slots: int = 8,
        capacity: int = 256,
        max_retained: int = 16,
        reuse_prefixes: bool = True,
    ):
        self.num_layers, self.kv_heads, self.head_dim, self.dtype = num_layers, kv_heads, head_dim, dtype
        self.k = [torch.zeros(slots, kv_heads, capacity, head_dim, dtype=dtype) for _ in range(num_layers)]
        self.v = [torch.zeros_like(t) for t in self.k]
        self.tokens: list[list[int]] = [[] for _ in range(slots)]  # the ids whose keys slot s holds, in order
        self.reuse_prefixes = reuse_prefixes
        self.max_retained = max_retained if reuse_prefixes else 0
        self.reused_tokens = 0  # prompt tokens copied from a cached prefix
        self.computed_tokens = 0  # prompt tokens run through the model
        self._free = list(range(slots - 1, -1, -1))
        self._retained: OrderedDict[int, None] = OrderedDict()  # finished slots kept for their prefixes, LRU first
        self._lock = threading.Lock()  # alloc/release come from request threads; tensors only from the stepper
        self._write: tuple[Tensor, Tensor] | None = None  # (rows, columns) the next forward writes
        self._read = (0, 0, 0)  # (first row or -1 to gather, rows, columns) the next forward attends over
        self._rows = torch.zeros(0, dtype=torch.long)  # the rows to gather when they are not contiguous

    @property
    def slots(self) -> int:
        return self.k[0].shape[0]

    @property
    def capacity(self) -> int:
        return self.k[0].shape[2]

    def length(self, slot: int) -> int:
        return len(self.tokens[slot])

    # ---- slots ----------------------------------------------------------------------------------------
    def alloc(self) -> int:
        with self._lock:
            if not self._free:
                if self._retained and len(self._retained) >= self.max_retained:
                    self._free.append(self._retained.popitem(last=False)[0])
                else:
                    self._grow(slots=2 * self.slots)
            slot = self._free.pop()
            self.tokens[slot] = []
            return slot

    def release(self, slot: int) -> None:
        """The generation in `slot` is done; its keys stay available as a prefix until the slot is needed."""
        with self._lock:
            self._retained[slot] = None
            while len(self._retained) > self.max_retained:
                old = self._retained.popitem(last=False)[0]
                self.tokens[old] = []
                self._free.append(old)
            self._free.sort(reverse=True)  # lowest slots first: keeps the active ones contiguous (no gather)

    def _grow(self, slots: int | None = None, capacity: int | None = None) -> None:
        s, c = slots or self.slots, capacity or self.capacity
        for store in (self.k, self.v):
            for i, old in enumerate(store):
                new = torch.zeros(s, self.kv_heads, c, self.head_dim, dtype=self.dtype)
                new[: old.shape[0], :, : old.shape[2]] = old
                store[i] = new
        self._free = sorted(set(self._free) | set(range(len(self.tokens), s)), reverse=True)
        self.tokens += [[] for _ in range(s - len(self.tokens))]

    def ensure_capacity(self, length: int) -> None:
        if length > self.capacity:
            cap = self.capacity
            while cap < length:
                cap *= 2
            with self._lock:
                self._grow(capacity=cap)

    # ---- prefixes -------------------------------------------------------------------------------------
    def longest_prefix(self, ids: list[int], exclude: int) -> tuple[int, int]:
        """(slot, n): the slot holding the longest prefix of `ids` (n tokens), not counting `exclude`."""
        best, best_n = -1, 0
        if not self.reuse_prefixes:
            return best, best_n
        for s, held in enumerate(self.tokens):
            if s == exclude or len(held) <= best_n:
                continue
            n = 0
            for a, b in zip(held, ids):
                if a != b:
                    break
                n += 1
            if n > best_n:
                best, best_n = s, n
        if best in self._retained:
            with self._lock:
                if best in self._retained:
                    self._retained.move_to_end(best)  # recently useful: evicted last
        return best, best_n

    def copy_prefix(self, src: int, dst: int, n: int) -> None:
        for store in (self.k, self.v):
            for t in store:
                t[dst, :, :n] = t[src, :, :n]
        self.tokens[dst] = self.tokens[src][:n]

    # ---- one forward pass: either extend one slot by several tokens, or decode one token in many slots ----
    def extending(self, slot: int, new: list[int]) -> Tensor:
        """Prepares a forward of `new` after what `slot` holds; returns its position ids [1, T]."""
        start = self.length(slot)
        self.ensure_capacity(start + len(new))
        self._write = (torch.tensor([[slot]]), torch.arange(start, start + len(new))[None])
        self._read = (slot, 1, start + len(new))
        self.tokens[slot] = self.tokens[slot] + new
        return torch.arange(start, start + len(new))[None]

    def decoding(self, slots: list[int], tokens: list[int]) -> tuple[Tensor, DenseMask]:
        """Prepares one decode step of `slots`: returns (position ids [B, 1], the per-row length mask)."""
        pos = torch.tensor([self.length(s) for s in slots])
        span = int(pos.max()) + 1
        self.ensure_capacity(span)
        contiguous = slots == list(range(slots[0], slots[0] + len(slots)))
        self._write = (torch.tensor(slots)[:, None], pos[:, None])
        self._read = (slots[0] if contiguous else -1, len(slots), span)
        self._rows = torch.tensor(slots)
        for s, t in zip(slots, tokens):
            self.tokens[s].append(t)
        return pos[:, None], DenseMask(torch.arange(span)[None, None, :] <= pos[:, None, None])

    def update(self, layer: int, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        """The model's hook: k, v [B, kv heads, T, D] are written at the prepared places; returns the keys and
        values to attend over [B, kv heads, span, D]."""
        assert self._write is not None, "call extending() or decoding() before the forward pass"
        rows, cols = self._write
        # rows [B, 1], cols [B, T] index [slot, :, position]: the advanced indices broadcast to [B, T] and go
        # first, so the written value is laid out [B, T, kv heads, D].
        self.k[layer][rows, :, cols] = k.transpose(1, 2)
        self.v[layer][rows, :, cols] = v.transpose(1, 2)
        first, b, span = self._read
        if first >= 0:
            return self.k[layer][first : first + b, :, :span], self.v[layer][first : first + b, :, :span]
        return (
            self.k[layer][:, :, :span].index_select(0, self._rows),
            self.v[layer][:, :, :span].index_select(0, self._rows),
        )


def _own_store(kv: KVStore) -> SlotKV:
    """The engine hands a runner back the store its `new_kv` made; anything else is a bug, said so early."""
    if not isinstance(kv, SlotKV):
        raise TypeError(f"TransformerRunner runs on the SlotKV its new_kv() made, got {type(kv).__name__}")
    return kv


class TransformerRunner:
    def __init__(self, model: Transformer, reuse_prefixes: bool = True) -> None:
        self.model = model.eval()
        self.reuse_prefixes = reuse_prefixes
        self.vocab_size = model.config.vocab_size

    def new_kv(self) -> SlotKV:
        cfg = self.model.config
        dtype = next(self.model.parameters()).dtype
        return SlotKV(
            cfg.num_hidden_layers, cfg.num_key_value_heads, cfg.head_size, dtype, reuse_prefixes=self.reuse_prefixes
        )

    @torch.inference_mode()
    def prefill(self, ids: list[int], kv: KVStore, slot: int) -> Tensor:
        """Fills `slot` with `ids` (copying the longest cached prefix, computing the rest); returns the logits
        of the last position [V] fp32."""
        kv = _own_store(kv)
        src, n = kv.longest_prefix(ids, exclude=slot)
        n = min(n, len(ids) - 1)  # at least the last token runs: its logits are the answer
        if n > 0:
            kv.copy_prefix(src, slot, n)
        else:
            kv.tokens[slot] = []
        kv.reused_tokens += n
        kv.computed_tokens += len(ids) - n
        new = ids[n:]
        positions = kv.extending(slot, new)
        logits = self.model(torch.tensor([new], dtype=torch.long), position_ids=positions, kv_cache=kv)
        return logits[0, -1].float()

    @torch.inference_mode()
    def decode(self, tokens: list[int], kv: KVStore, slots: list[int]) -> Tensor:
        """Feeds token b at the end of slot b's cache, for all b at once; returns logits [B, V] fp32."""
        kv = _own_store(kv)
        positions, mask = kv.decoding(slots, tokens)
        logits = self.model(
            torch.tensor(tokens, dtype=torch.long)[:, None], position_ids=positions, attention=mask, kv_cache=kv
        )
        return logits[:, -1].float()
