"""A decoder-only transformer of the Llama/Qwen family, with HF-format save and load.

Families (`ARCHITECTURES`): Qwen2/2.5, Qwen3 dense, Llama 2/3.x. RMSNorm, rotary position embeddings driven by
explicit position ids (llama3 frequency scaling optional), SwiGLU MLP, grouped-query attention, optional q/k/v
bias (Qwen2), optional per-head q/k RMSNorm and free head_dim (Qwen3), tied or untied input/output embeddings.
Module and parameter names mirror transformers' (`model.layers.0.self_attn.q_proj.weight`, `...q_norm.weight`,
`lm_head.weight`, ...), so a state dict is an HF checkpoint as is and transformers/vLLM/SGLang load what
`save_pretrained` writes. Why this file and not stock transformers models: bench/models/README.md.

Who may attend to whom is not the model's business: `forward` takes an `AttentionMask` (attention.py).
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from .attention import AttentionMask, CausalMask

# The model families this file implements, by HF `model_type`, with the `architectures` entry of their
# config.json. Anything else is refused when a checkpoint is read (and by `validate`, src/config/checks.ts).
ARCHITECTURES: dict[str, str] = {
    "qwen2": "Qwen2ForCausalLM",  # Qwen2 / Qwen2.5: q/k/v bias
    "qwen3": "Qwen3ForCausalLM",  # Qwen3 dense: RMSNorm on each head's q and k, head_dim of its own, no bias
    "llama": "LlamaForCausalLM",  # Llama 2 / 3.x: no bias; 3.1+ with "llama3" RoPE scaling
}
# RoPE variants read from config.json's rope_parameters / rope_scaling.
ROPE_TYPES = ("default", "llama3")


def supported_models() -> str:
    return ", ".join(f"{arch} (model_type {t})" for t, arch in ARCHITECTURES.items())


@dataclass(frozen=True)
class ModelConfig:
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    max_position_embeddings: int = 4096
    rope_theta: float = 10000.0
    rms_norm_eps: float = 1e-6
    tie_word_embeddings: bool = True
    attention_bias: bool = True  # q/k/v bias as in Qwen2 (o_proj never has one)
    head_dim: int = 0  # 0: hidden_size / num_attention_heads; Qwen3 sets its own (see `head_size`)
    qk_norm: bool = False  # Qwen3: RMSNorm over each head's q and k before RoPE
    # Llama 3.1+ "llama3" RoPE: long wavelengths slowed by `factor`, a smooth ramp between the low and high
    # frequency bounds. factor 1.0 leaves every frequency as it is: plain RoPE.
    rope_scaling_factor: float = 1.0
    rope_low_freq_factor: float = 1.0
    rope_high_freq_factor: float = 4.0
    rope_original_max_position_embeddings: int = 8192

    def __post_init__(self) -> None:
        if self.head_dim == 0 and self.hidden_size % self.num_attention_heads != 0:
            raise ValueError(
                f"hidden_size {self.hidden_size} is not a multiple of num_attention_heads {self.num_attention_heads}"
            )
        if self.num_attention_heads % self.num_key_value_heads != 0:
            raise ValueError(
                f"num_attention_heads {self.num_attention_heads} is not a multiple of "
                f"num_key_value_heads {self.num_key_value_heads}"
            )
        if self.head_size % 2 != 0:
            raise ValueError("head_dim must be even for rotary embeddings")
        if self.qk_norm and self.attention_bias:
            raise ValueError("qk_norm (Qwen3) with attention_bias is not a supported family: set one of them")
        if self.rope_scaling_factor != 1.0 and self.rope_high_freq_factor <= self.rope_low_freq_factor:
            raise ValueError("rope_high_freq_factor must exceed rope_low_freq_factor")

    @property
    def head_size(self) -> int:
        """The per-head width: head_dim when set, else hidden_size / num_attention_heads."""
        return self.head_dim or self.hidden_size // self.num_attention_heads

    @property
    def model_type(self) -> str:
        """The HF family these fields describe: q/k norm is Qwen3, a q/k/v bias Qwen2, neither Llama."""
        return "qwen3" if self.qk_norm else "qwen2" if self.attention_bias else "llama"

    def num_params(self) -> int:
        h, i, d = self.hidden_size, self.intermediate_size, self.head_size
        q, kv = self.num_attention_heads * d, self.num_key_value_heads * d
        attn = 2 * h * q + 2 * h * kv + (q + 2 * kv if self.attention_bias else 0) + (2 * d if self.qk_norm else 0)
        layer = attn + 3 * h * i + 2 * h
        emb = self.vocab_size * h
        return emb * (1 if self.tie_word_embeddings else 2) + self.num_hidden_layers * layer + h

    def rope_parameters(self) -> dict[str, Any]:
        if self.rope_scaling_factor == 1.0:
            return {"rope_type": "default", "rope_theta": self.rope_theta}
        return {
            "rope_type": "llama3",
            "rope_theta": self.rope_theta,
            "factor": self.rope_scaling_factor,
            "low_freq_factor": self.rope_low_freq_factor,
            "high_freq_factor": self.rope_high_freq_factor,
            "original_max_position_embeddings": self.rope_original_max_position_embeddings,
        }

    def to_hf_dict(self) -> dict[str, Any]:
        """config.json content for `model_type` (transformers/vLLM read it as that family)."""
        model_type = self.model_type
        rope = self.rope_parameters()
        d: dict[str, Any] = {
            "architectures": [ARCHITECTURES[model_type]],
            "model_type": model_type,
            "vocab_size": self.vocab_size,
            "hidden_size": self.hidden_size,
            "intermediate_size": self.intermediate_size,
            "num_hidden_layers": self.num_hidden_layers,
            "num_attention_heads": self.num_attention_heads,
            "num_key_value_heads": self.num_key_value_heads,
            "head_dim": self.head_size,
            "max_position_embeddings": self.max_position_embeddings,
            "rope_theta": self.rope_theta,
            "rope_parameters": rope,
            "rms_norm_eps": self.rms_norm_eps,
            "tie_word_embeddings": self.tie_word_embeddings,
            "hidden_act": "silu",
            "initializer_range": 0.02,
            "use_cache": True,
            "torch_dtype": "float32",
            "dtype": "float32",
        }
        if rope["rope_type"] != "default":
            d["rope_scaling"] = rope  # the name older readers (transformers 4.x, vLLM) look for
        if model_type in ("qwen2", "qwen3"):
            d.update({"use_sliding_window": False, "sliding_window": None, "max_window_layers": self.num_hidden_layers})
        if model_type != "qwen2":
            d.update({"attention_bias": False, "mlp_bias": False})
        return d

    @classmethod
    def from_hf_dict(cls, d: dict) -> ModelConfig:
        model_type = check_supported(d)
        missing = [
            k
            for k in ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads")
            if k not in d
        ]
        if missing:
            raise ValueError(f"config.json lacks {missing}")
        rope = _rope_from_hf(d)
        heads = d["num_attention_heads"]
        head_dim = d.get("head_dim") or 0
        if head_dim and d["hidden_size"] % heads == 0 and head_dim == d["hidden_size"] // heads:
            head_dim = 0  # the derived width: keep the field at its default, so presets round-trip
        return cls(
            vocab_size=d["vocab_size"],
            hidden_size=d["hidden_size"],
            intermediate_size=d["intermediate_size"],
            num_hidden_layers=d["num_hidden_layers"],
            num_attention_heads=heads,
            num_key_value_heads=d.get("num_key_value_heads") or heads,
            max_position_embeddings=d.get("max_position_embeddings", 4096),
            rms_norm_eps=d.get("rms_norm_eps", 1e-6),
            tie_word_embeddings=d.get("tie_word_embeddings", False),  # transformers' default for all three
            attention_bias=model_type == "qwen2",
            head_dim=head_dim,
            qk_norm=model_type == "qwen3",
            **rope,
        )


def check_supported(d: dict) -> str:
    """The config.json's model_type when this file implements it exactly; else ValueError naming what is.

    The same rules are `validate`'s (src/config/checks.ts `hfConfigProblems`)."""
    model_type = d.get("model_type", "qwen2")
    if model_type not in ARCHITECTURES:
        raise ValueError(f"unsupported model_type {model_type!r} (supported: {supported_models()})")
    archs = d.get("architectures")
    if archs is not None and archs != [ARCHITECTURES[model_type]]:
        raise ValueError(f"unsupported architectures {archs!r} (supported: {supported_models()})")
    refused = {
        "hidden_act": (d.get("hidden_act", "silu") != "silu", "only silu (SwiGLU) is implemented"),
        "attention_bias": (
            model_type != "qwen2" and bool(d.get("attention_bias", False)),
            f"{model_type} with a q/k/v/o bias is not implemented",
        ),
        "mlp_bias": (bool(d.get("mlp_bias", False)), "an MLP bias is not implemented"),
        "use_sliding_window": (
            bool(d.get("use_sliding_window", False)) or "sliding_attention" in (d.get("layer_types") or []),
            "sliding-window attention is not implemented",
        ),
    }
    for key, (bad, why) in refused.items():
        if bad:
            raise ValueError(f"config.json {key}: {why}")
    return model_type


def _rope_from_hf(d: dict) -> dict[str, Any]:
    """ModelConfig's rope_* fields from rope_parameters (transformers 5) or rope_scaling + rope_theta (4.x)."""
    params = d.get("rope_parameters") or d.get("rope_scaling") or {}
    rope_type = params.get("rope_type", params.get("type", "default"))
    if rope_type not in ROPE_TYPES:
        raise ValueError(f"config.json rope type {rope_type!r} is not implemented (supported: {', '.join(ROPE_TYPES)})")
    theta = d.get("rope_theta")
    if theta is None:
        theta = params.get("rope_theta", 10000.0)
    out: dict[str, Any] = {"rope_theta": float(theta)}
    if rope_type == "llama3":
        out.update(
            rope_scaling_factor=float(params["factor"]),
            rope_low_freq_factor=float(params["low_freq_factor"]),
            rope_high_freq_factor=float(params["high_freq_factor"]),
            rope_original_max_position_embeddings=int(params["original_max_position_embeddings"]),
        )
    return out


PRESETS: dict[str, ModelConfig] = {
    # ~1.3M parameters at vocab 4096 (~1.05M with the demo's 2048): CPU tests and the demo pipeline, sized
    # so a shared 2-core machine runs the demo's stages in minutes.
    "tiny": ModelConfig(
        vocab_size=4096,
        hidden_size=128,
        intermediate_size=384,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=2048,
    ),
    # ~40M parameters: a CPU-possible but slow model, handy on a small GPU.
    "small": ModelConfig(
        vocab_size=32000,
        hidden_size=512,
        intermediate_size=1408,
        num_hidden_layers=8,
        num_attention_heads=8,
        num_key_value_heads=4,
        max_position_embeddings=4096,
    ),
    # ~1.04B parameters (Llama-3.2-1B shape with a 32k vocabulary): the GPU benchmark.
    "1b": ModelConfig(
        vocab_size=32000,
        hidden_size=2048,
        intermediate_size=8192,
        num_hidden_layers=16,
        num_attention_heads=32,
        num_key_value_heads=8,
        max_position_embeddings=8192,
        rope_theta=500000.0,
    ),
}


def preset(name: str, **overrides: Any) -> ModelConfig:
    """A preset by name, with field overrides (e.g. vocab_size to match a tokenizer)."""
    if name not in PRESETS:
        raise KeyError(f"unknown model preset {name!r} (known: {', '.join(PRESETS)})")
    known = {f.name for f in fields(ModelConfig)}
    unknown = set(overrides) - known
    if unknown:
        raise KeyError(f"unknown model config field(s) {sorted(unknown)} (known: {sorted(known)})")
    return replace(PRESETS[name], **overrides)


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: Tensor) -> Tensor:
        # Normalise in at least fp32 (as HF does) and cast back: bf16 variance is too coarse. float64 stays
        # float64, so float64 gradients are exact to ~1e-16 (the trie-vs-flat tests compare at 1e-10).
        dtype = x.dtype
        x = x.to(torch.promote_types(dtype, torch.float32))
        x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * x.to(dtype)


def rope_inv_freq(cfg: ModelConfig) -> Tensor:
    """The rotary frequencies (float32, as transformers computes them), llama3-scaled when configured.

    llama3 scaling, by wavelength λ = 2π/f against the original context L: λ < L/high_freq_factor keeps f,
    λ > L/low_freq_factor divides it by `factor`, and in between f is blended linearly in L/λ.
    """
    d = cfg.head_size
    inv_freq = 1.0 / (cfg.rope_theta ** (torch.arange(0, d, 2, dtype=torch.int64).float() / d))
    if cfg.rope_scaling_factor == 1.0:
        return inv_freq
    factor, low, high = cfg.rope_scaling_factor, cfg.rope_low_freq_factor, cfg.rope_high_freq_factor
    context = cfg.rope_original_max_position_embeddings
    wavelen = 2 * math.pi / inv_freq
    ramp = ((context / wavelen - low) / (high - low)).clamp(0.0, 1.0)  # 0: long wavelengths, 1: short ones
    blended = (1 - ramp) * inv_freq / factor + ramp * inv_freq
    return torch.where(
        wavelen < context / high, inv_freq, torch.where(wavelen > context / low, inv_freq / factor, blended)
    )


class RotaryEmbedding(nn.Module):
    """cos/sin tables computed from explicit position ids (trees reuse positions: position = depth)."""

    inv_freq: Tensor  # a buffer (register_buffer), declared for the type checker

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.register_buffer("inv_freq", rope_inv_freq(cfg), persistent=False)

    def forward(self, position_ids: Tensor, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
        with torch.autocast(device_type=position_ids.device.type, enabled=False):
            freqs = position_ids[:, :, None].float() * self.inv_freq[None, None, :].float()
            emb = torch.cat([freqs, freqs], dim=-1)  # [B, T, D], halves layout (HF rotate_half convention)
            return emb.cos().to(dtype), emb.sin().to(dtype)


def rotate_half(x: Tensor) -> Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat([-x2, x1], dim=-1)


def apply_rope(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    # x [B, H, T, D]; cos/sin [B, T, D] broadcast over heads.
    return x * cos[:, None] + rotate_half(x) * sin[:, None]


class KVCache:
    """Per-layer key/value tensors for incremental decoding; `forward` appends the new positions.

    Keys are stored after RoPE, so position ids of later calls only need to cover the new tokens.
    """

    def __init__(self, num_layers: int):
        self.layers: list[tuple[Tensor, Tensor] | None] = [None] * num_layers

    @property
    def length(self) -> int:
        first = self.layers[0]
        return 0 if first is None else first[0].shape[2]

    def update(self, layer: int, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        prev = self.layers[layer]
        if prev is not None:
            k = torch.cat([prev[0], k], dim=2)
            v = torch.cat([prev[1], v], dim=2)
        self.layers[layer] = (k, v)
        return k, v


class Attention(nn.Module):
    def __init__(self, cfg: ModelConfig, layer_idx: int):
        super().__init__()
        self.layer_idx = layer_idx
        self.n_heads, self.n_kv, self.head_dim = cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_size
        self.q_proj = nn.Linear(cfg.hidden_size, self.n_heads * self.head_dim, bias=cfg.attention_bias)
        self.k_proj = nn.Linear(cfg.hidden_size, self.n_kv * self.head_dim, bias=cfg.attention_bias)
        self.v_proj = nn.Linear(cfg.hidden_size, self.n_kv * self.head_dim, bias=cfg.attention_bias)
        self.o_proj = nn.Linear(self.n_heads * self.head_dim, cfg.hidden_size, bias=False)
        # Qwen3: each head's q and k RMS-normalised (one weight over head_dim, shared by the heads) before RoPE
        self.q_norm = RMSNorm(self.head_dim, cfg.rms_norm_eps) if cfg.qk_norm else None
        self.k_norm = RMSNorm(self.head_dim, cfg.rms_norm_eps) if cfg.qk_norm else None

    def forward(self, x: Tensor, cos: Tensor, sin: Tensor, mask: AttentionMask, kv_cache: KVCache | None) -> Tensor:
        b, t, _ = x.shape
        q = self.q_proj(x).view(b, t, self.n_heads, self.head_dim)
        k = self.k_proj(x).view(b, t, self.n_kv, self.head_dim)
        if self.q_norm is not None and self.k_norm is not None:
            q, k = self.q_norm(q), self.k_norm(k)
        q, k = q.transpose(1, 2), k.transpose(1, 2)
        v = self.v_proj(x).view(b, t, self.n_kv, self.head_dim).transpose(1, 2)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        if kv_cache is not None:
            k, v = kv_cache.update(self.layer_idx, k, v)
        out = mask.attend(q, k, v, 1.0 / math.sqrt(self.head_dim))
        return self.o_proj(out.transpose(1, 2).reshape(b, t, self.n_heads * self.head_dim))


class MLP(nn.Module):
    """SwiGLU: down(silu(gate(x)) * up(x))."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.gate_proj = nn.Linear(cfg.hidden_size, cfg.intermediate_size, bias=False)
        self.up_proj = nn.Linear(cfg.hidden_size, cfg.intermediate_size, bias=False)
        self.down_proj = nn.Linear(cfg.intermediate_size, cfg.hidden_size, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class Block(nn.Module):
    def __init__(self, cfg: ModelConfig, layer_idx: int):
        super().__init__()
        self.input_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.self_attn = Attention(cfg, layer_idx)
        self.post_attention_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.mlp = MLP(cfg)

    def forward(self, x: Tensor, cos: Tensor, sin: Tensor, mask: AttentionMask, kv_cache: KVCache | None) -> Tensor:
        x = x + self.self_attn(self.input_layernorm(x), cos, sin, mask, kv_cache)
        return x + self.mlp(self.post_attention_layernorm(x))


class Backbone(nn.Module):
    """HF's `model.` prefix: embeddings, layers, final norm."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        self.layers = nn.ModuleList(Block(cfg, i) for i in range(cfg.num_hidden_layers))
        self.norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.rotary = RotaryEmbedding(cfg)


class Transformer(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.config = cfg
        self.model = Backbone(cfg)
        self.lm_head = nn.Linear(cfg.hidden_size, cfg.vocab_size, bias=False)
        self.reset_parameters()
        if cfg.tie_word_embeddings:
            self.lm_head.weight = self.model.embed_tokens.weight

    def reset_parameters(self) -> None:
        """Normal(0, 0.02) weights, zero biases, unit norms (HF's initializer_range); seed first."""
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Embedding):
                nn.init.normal_(m.weight, std=0.02)
            elif isinstance(m, RMSNorm):
                nn.init.ones_(m.weight)

    def forward(
        self,
        input_ids: Tensor,
        position_ids: Tensor | None = None,
        attention: AttentionMask | None = None,
        kv_cache: KVCache | None = None,
    ) -> Tensor:
        """Logits [B, T, V] (fp32 unless running under autocast).

        position_ids default to 0..T-1 (continuing after the cached length when a KV cache is given);
        attention defaults to causal.
        """
        b, t = input_ids.shape
        if position_ids is None:
            start = kv_cache.length if kv_cache is not None else 0
            position_ids = torch.arange(start, start + t, device=input_ids.device)[None].expand(b, t)
        if position_ids.shape != input_ids.shape:
            raise ValueError(
                f"position_ids shape {tuple(position_ids.shape)} != input_ids shape {tuple(input_ids.shape)}"
            )
        mask = attention if attention is not None else CausalMask()
        x = self.model.embed_tokens(input_ids)
        cos, sin = self.model.rotary(position_ids, x.dtype)
        for layer in self.model.layers:
            x = layer(x, cos, sin, mask, kv_cache)
        return self.lm_head(self.model.norm(x))


# ---------------------------------------------------------------------------------------------- HF format

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"
DEFAULT_MAX_SHARD_BYTES = 2 * 1024**3


def hf_state_dict(model: Transformer) -> dict[str, Tensor]:
    """The model's tensors under HF names, contiguous, with the tied lm_head left out (HF re-ties it)."""
    sd = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    if model.config.tie_word_embeddings:
        sd.pop("lm_head.weight", None)
    return sd


def save_pretrained(
    model: Transformer,
    directory: str | os.PathLike,
    max_shard_bytes: int = DEFAULT_MAX_SHARD_BYTES,
    dtype: torch.dtype | None = None,
) -> list[str]:
    """Writes config.json and safetensors (sharded with an HF index above max_shard_bytes).

    Returns the file names written. dtype casts floating tensors on the way out (e.g. bf16 for serving).
    """
    return save_hf(hf_state_dict(model), model.config, directory, max_shard_bytes, dtype)


def save_hf(
    sd: dict[str, Tensor],
    config: ModelConfig,
    directory: str | os.PathLike,
    max_shard_bytes: int = DEFAULT_MAX_SHARD_BYTES,
    dtype: torch.dtype | None = None,
) -> list[str]:
    """save_pretrained for a full state dict under HF names (e.g. gathered from FSDP shards)."""
    from safetensors.torch import save_file

    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    if config.tie_word_embeddings:
        sd = {k: v for k, v in sd.items() if k != "lm_head.weight"}
    sd = {
        k: v.detach().to("cpu", dtype if dtype is not None and v.is_floating_point() else v.dtype).contiguous()
        for k, v in sd.items()
    }
    cfg = config.to_hf_dict()
    if dtype is not None:
        cfg["torch_dtype"] = cfg["dtype"] = str(dtype).removeprefix("torch.")
    (out / CONFIG_FILE).write_text(json.dumps(cfg, indent=2) + "\n")

    # Greedy sharding in parameter order, as HF does.
    shards: list[dict[str, Tensor]] = [{}]
    size = 0
    for name, t in sd.items():
        nbytes = t.numel() * t.element_size()
        if shards[-1] and size + nbytes > max_shard_bytes:
            shards.append({})
            size = 0
        shards[-1][name] = t
        size += nbytes
    meta = {"format": "pt"}
    if len(shards) == 1:
        save_file(shards[0], str(out / WEIGHTS_FILE), metadata=meta)
        return [CONFIG_FILE, WEIGHTS_FILE]
    names = [f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors" for i in range(len(shards))]
    weight_map = {}
    for fname, shard in zip(names, shards):
        save_file(shard, str(out / fname), metadata=meta)
        weight_map.update({k: fname for k in shard})
    total = sum(t.numel() * t.element_size() for t in sd.values())
    (out / INDEX_FILE).write_text(
        json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}, indent=2) + "\n"
    )
    return [CONFIG_FILE, *names, INDEX_FILE]


def load_config(directory: str | os.PathLike) -> ModelConfig:
    path = Path(directory) / CONFIG_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no config.json (not an HF model folder)")
    return ModelConfig.from_hf_dict(json.loads(path.read_text()))


def load_state_dict(directory: str | os.PathLike) -> dict[str, Tensor]:
    from safetensors.torch import load_file

    d = Path(directory)
    if (d / INDEX_FILE).is_file():
        index = json.loads((d / INDEX_FILE).read_text())
        sd: dict[str, Tensor] = {}
        for fname in sorted(set(index["weight_map"].values())):
            sd.update(load_file(str(d / fname)))
        return sd
    if (d / WEIGHTS_FILE).is_file():
        return load_file(str(d / WEIGHTS_FILE))
    raise FileNotFoundError(f"{d}: neither {WEIGHTS_FILE} nor {INDEX_FILE}")


def load_pretrained(
    directory: str | os.PathLike, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32
) -> Transformer:
    """A Transformer from an HF-format folder (ours, or a Qwen2/2.5, Qwen3 dense or Llama 2/3.x checkpoint)."""
    cfg = load_config(directory)
    model = Transformer(cfg).to(dtype)  # in dtype before the copy: float64 weights must not pass through fp32
    sd = load_state_dict(directory)
    if cfg.tie_word_embeddings:
        sd.pop("lm_head.weight", None)
    sd = {k: v.to(dtype) for k, v in sd.items()}
    missing, unexpected = model.load_state_dict(sd, strict=False)
    missing = [k for k in missing if not (cfg.tie_word_embeddings and k == "lm_head.weight")]
    if missing or unexpected:
        raise ValueError(
            f"{directory}: weights do not match config.json (missing {missing[:5]}, unexpected {unexpected[:5]})"
        )
    return model.to(device=device, dtype=dtype)


__all__ = [
    "ARCHITECTURES",
    "ROPE_TYPES",
    "check_supported",
    "ModelConfig",
    "PRESETS",
    "preset",
    "Transformer",
    "KVCache",
    "save_pretrained",
    "save_hf",
    "load_pretrained",
    "load_config",
    "load_state_dict",
    "hf_state_dict",
    "rope_inv_freq",
    "supported_models",
]
