"""vLLM worker extension (`--worker-extension-cls trainflow_vllm_ext.TrainflowReload`), imported inside the
vLLM environment's worker processes, so it imports nothing of trainflow's.

`POST /collective_rpc {"method": "trainflow_reload", "args": [DIR]}` reloads the weights from a servable HF
folder, then fixes the tied-embedding pitfall of the CPU build: `lm_head` shares the embedding's weight, but
the CPU linear kernels run on a copy packed when the model was loaded (`layer.cpu_linear`), which a reload
does not redo for a tied head (it loads no `lm_head.weight`), so logits would keep coming from the old
embedding. We re-tie the head to the reloaded embedding and re-pack it.
"""

from __future__ import annotations

from typing import Any


def _retie_lm_head(model: Any, hf_config: Any) -> bool:
    """Points a tied `lm_head` at the embedding again and re-packs it on CPU; True when it did."""
    if not getattr(hf_config, "tie_word_embeddings", False):
        return False
    lm_head = getattr(model, "lm_head", None)
    embed = getattr(getattr(model, "model", None), "embed_tokens", None)
    if lm_head is None or embed is None:
        return False
    if lm_head.weight is not embed.weight:
        lm_head.weight = embed.weight
    from vllm.platforms import current_platform  # type: ignore[import-not-found]

    if current_platform.is_cpu():
        from vllm.model_executor.layers.utils import dispatch_cpu_unquantized_gemm  # type: ignore[import-not-found]

        dispatch_cpu_unquantized_gemm(lm_head, remove_weight=False)
    return True


class TrainflowReload:
    """Mixed into vLLM's worker class (so `self` is the worker)."""

    def trainflow_reload(self, path: str) -> dict[str, Any]:
        self.reload_weights(weights_path=path)  # type: ignore[attr-defined]
        model = self.model_runner.get_model()  # type: ignore[attr-defined]
        hf_config = self.vllm_config.model_config.hf_config  # type: ignore[attr-defined]
        return {"path": path, "retied_lm_head": _retie_lm_head(model, hf_config)}
