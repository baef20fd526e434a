"""Stock transformers models driven by the trainer's trie step, for the model-path measurement (run.py).

Two ways to give an unmodified `AutoModelForCausalLM` the tree mask:

- `hf_tree`: an attention function registered with transformers' `AttentionInterface` under "trainflow_tree".
  It receives each layer's q/k/v ([B, H, T, D], grouped-query k/v as they are) and a `tree_mask` kwarg that
  the model forwards from its call to every layer, and calls the same `AttentionMask.attend` the home-made
  model calls (SegmentTreeMask on CPU, FlexTreeMask on GPU). A matching `AttentionMaskInterface` entry returns
  None, so transformers builds no mask of its own and never infers packed sequences from the tree positions.
- `hf_sdpa4d`: attn_implementation "sdpa" and the tree rule as a 4D boolean `attention_mask` [1, 1, N, N],
  which transformers passes through unchanged (O(N²) memory: the dense reference).

`StockModel` has the call signature the trie step uses for a model that is not the home-made one,
`model(ids, pos, mask)[0][rows]`: indexing the result runs the HF forward with `logits_to_keep=rows`, so the
LM head runs on the predicting rows only, as it does for the home-made model (a fair comparison).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn
from transformers import AttentionInterface, AttentionMaskInterface

from trainflow_trainer.attention import AttentionMask, CausalMask
from trainflow_trainer.trie.attention import DenseTreeMask

TREE_ATTENTION = "trainflow_tree"


def _tree_attention(
    module: nn.Module,
    query: Tensor,
    key: Tensor,
    value: Tensor,
    attention_mask: Tensor | None,
    scaling: float,
    dropout: float = 0.0,
    tree_mask: AttentionMask | None = None,
    **_: Any,
) -> tuple[Tensor, None]:
    mask = tree_mask if tree_mask is not None else CausalMask()
    return mask.attend(query, key, value, scaling).transpose(1, 2).contiguous(), None


def _no_mask(*_: Any, **__: Any) -> None:
    return None


AttentionInterface.register(TREE_ATTENTION, _tree_attention)
AttentionMaskInterface.register(TREE_ATTENTION, _no_mask)


class _Rows:
    """`result[0][rows]`: the logits of those rows of the (single) packed sequence, computed on demand."""

    def __init__(self, run: Callable[[Tensor], Tensor]) -> None:
        self.run = run

    def __getitem__(self, index: int | Tensor) -> Any:
        if isinstance(index, int):
            if index != 0:
                raise IndexError("one packed micro-batch")
            return self
        return self.run(index)


class StockModel(nn.Module):
    """An HF causal LM behind the home-made model's call: (ids, pos, mask) for trie steps, (ids) for flat."""

    def __init__(self, hf: nn.Module, mode: str) -> None:
        super().__init__()
        if mode not in ("hf_tree", "hf_sdpa4d"):
            raise ValueError(mode)
        self.hf, self.mode = hf, mode
        hf.config._attn_implementation = TREE_ATTENTION if mode == "hf_tree" else "sdpa"

    def forward(self, ids: Tensor, pos: Tensor | None = None, mask: AttentionMask | None = None) -> Any:
        if mask is None:  # the flat reference: plain causal, default positions
            return self.hf(input_ids=ids).logits
        kwargs: dict[str, Any]
        if self.mode == "hf_tree":
            kwargs = {"tree_mask": mask}
        else:
            if not isinstance(mask, DenseTreeMask):
                raise TypeError("hf_sdpa4d needs the DenseTreeMask backend (its rule as a dense mask)")
            kwargs = {"attention_mask": mask.allowed(ids.device)[None, None]}
        return _Rows(lambda rows: self.hf(input_ids=ids, position_ids=pos, logits_to_keep=rows, **kwargs).logits[0])


def float64_norms(model: nn.Module) -> nn.Module:
    """Diagnosis only: transformers' RMSNorm computes in float32 even in a float64 model. Giving its norms
    float64 arithmetic (nothing else changes) shows whether that cast is what limits an HF path's exactness."""

    def forward(self: nn.Module, x: Tensor) -> Tensor:
        y = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.variance_epsilon)
        return self.weight * y

    for m in model.modules():
        if type(m).__name__.endswith("RMSNorm"):
            m.forward = forward.__get__(m)  # type: ignore[method-assign]
    return model


def strip_prefix(grads: dict[str, Tensor]) -> dict[str, Tensor]:
    """StockModel's parameter names (hf.model.layers...) as the home-made model's (model.layers...)."""
    return {k.removeprefix("hf."): v for k, v in grads.items()}


__all__ = ["StockModel", "TREE_ATTENTION", "float64_norms", "strip_prefix"]
