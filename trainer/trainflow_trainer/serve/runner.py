"""Binds the trainer's `Transformer` to the engine's Runner protocol (prefill + one-token decode, KV cache)."""

from __future__ import annotations

import torch
from torch import Tensor

from ..model import KVCache, Transformer


class TransformerRunner:
    def __init__(self, model: Transformer):
        self.model = model.eval()
        self.vocab_size = model.config.vocab_size

    @torch.inference_mode()
    def prefill(self, ids: list[int]) -> tuple[Tensor, KVCache]:
        cache = KVCache(self.model.config.num_hidden_layers)
        logits = self.model(torch.tensor([ids], dtype=torch.long), kv_cache=cache)
        return logits[0, -1].float(), cache

    @torch.inference_mode()
    def decode(self, token: int, position: int, cache: object) -> tuple[Tensor, KVCache]:
        assert isinstance(cache, KVCache) and cache.length == position, "cache out of step with the sequence"
        logits = self.model(torch.tensor([[token]], dtype=torch.long), kv_cache=cache)
        return logits[0, -1].float(), cache
