"""A decoder-only transformer of the Llama/Qwen2 family, with HF-format save and load.

RMSNorm, rotary position embeddings driven by explicit position ids, SwiGLU MLP, grouped-query attention,
optional q/k/v bias (Qwen2), tied or untied input/output embeddings. Module and parameter names mirror
transformers' `Qwen2ForCausalLM` (`model.layers.0.self_attn.q_proj.weight`, `lm_head.weight`, ...), so a
state dict is an HF checkpoint as is and transformers/vLLM/SGLang load what `save_pretrained` writes.

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

    def __post_init__(self) -> None:
        if self.hidden_size % self.num_attention_heads != 0:
            raise ValueError(
                f"hidden_size {self.hidden_size} is not a multiple of num_attention_heads {self.num_attention_heads}"
            )
        if self.num_attention_heads % self.num_key_value_heads != 0:
            raise ValueError(
                f"num_attention_heads {self.num_attention_heads} is not a multiple of "
                f"num_key_value_heads {self.num_key_value_heads}"
            )
        if (self.hidden_size // self.num_attention_heads) % 2 != 0:
            raise ValueError("head_dim must be even for rotary embeddings")

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    def num_params(self) -> int:
        h, i, d = self.hidden_size, self.intermediate_size, self.head_dim
        kv = self.num_key_value_heads * d
        attn = h * h + 2 * h * kv + h * h + (h + 2 * kv if self.attention_bias else 0)
        layer = attn + 3 * h * i + 2 * h
        emb = self.vocab_size * h
        return emb * (1 if self.tie_word_embeddings else 2) + self.num_hidden_layers * layer + h

    def to_hf_dict(self) -> dict[str, Any]:
        """config.json content. Qwen2 when q/k/v carry a bias (Qwen2 always has one), else Llama."""
        qwen2 = self.attention_bias
        d: dict[str, Any] = {
            "architectures": ["Qwen2ForCausalLM" if qwen2 else "LlamaForCausalLM"],
            "model_type": "qwen2" if qwen2 else "llama",
            "vocab_size": self.vocab_size,
            "hidden_size": self.hidden_size,
            "intermediate_size": self.intermediate_size,
            "num_hidden_layers": self.num_hidden_layers,
            "num_attention_heads": self.num_attention_heads,
            "num_key_value_heads": self.num_key_value_heads,
            "head_dim": self.head_dim,
            "max_position_embeddings": self.max_position_embeddings,
            "rope_theta": self.rope_theta,
            "rope_parameters": {"rope_type": "default", "rope_theta": self.rope_theta},
            "rms_norm_eps": self.rms_norm_eps,
            "tie_word_embeddings": self.tie_word_embeddings,
            "hidden_act": "silu",
            "initializer_range": 0.02,
            "use_cache": True,
            "torch_dtype": "float32",
            "dtype": "float32",
        }
        if qwen2:
            d.update({"use_sliding_window": False, "sliding_window": None, "max_window_layers": self.num_hidden_layers})
        else:
            d.update({"attention_bias": False, "mlp_bias": False})
        return d

    @classmethod
    def from_hf_dict(cls, d: dict) -> ModelConfig:
        model_type = d.get("model_type", "qwen2")
        if model_type not in ("qwen2", "llama"):
            raise ValueError(f"unsupported model_type {model_type!r} (expected 'qwen2' or 'llama')")
        rope_theta = d.get("rope_theta")
        if rope_theta is None:
            rope_theta = (d.get("rope_parameters") or {}).get("rope_theta", 10000.0)
        missing = [
            k
            for k in ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads")
            if k not in d
        ]
        if missing:
            raise ValueError(f"config.json lacks {missing}")
        cfg = cls(
            vocab_size=d["vocab_size"],
            hidden_size=d["hidden_size"],
            intermediate_size=d["intermediate_size"],
            num_hidden_layers=d["num_hidden_layers"],
            num_attention_heads=d["num_attention_heads"],
            num_key_value_heads=d.get("num_key_value_heads") or d["num_attention_heads"],
            max_position_embeddings=d.get("max_position_embeddings", 4096),
            rope_theta=float(rope_theta),
            rms_norm_eps=d.get("rms_norm_eps", 1e-6),
            tie_word_embeddings=d.get("tie_word_embeddings", model_type == "qwen2"),
            attention_bias=True if model_type == "qwen2" else bool(d.get("attention_bias", False)),
        )
        if d.get("head_dim") not in (None, cfg.head_dim):
            raise ValueError(
                f"head_dim {d['head_dim']} != hidden_size/num_attention_heads {cfg.head_dim}: not supported"
            )
        return cfg


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


class RotaryEmbedding(nn.Module):
    """cos/sin tables computed from explicit position ids (trees reuse positions: position = depth)."""

    inv_freq: Tensor  # a buffer (register_buffer), declared for the type checker

    def __init__(self, head_dim: int, theta: float):
        super().__init__()
        inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.int64).float() / head_dim))
        self.register_buffer("inv_freq", inv_freq, persistent=False)

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
        self.n_heads, self.n_kv, self.head_dim = cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim
        self.q_proj = nn.Linear(cfg.hidden_size, self.n_heads * self.head_dim, bias=cfg.attention_bias)
        self.k_proj = nn.Linear(cfg.hidden_size, self.n_kv * self.head_dim, bias=cfg.attention_bias)
        self.v_proj = nn.Linear(cfg.hidden_size, self.n_kv * self.head_dim, bias=cfg.attention_bias)
        self.o_proj = nn.Linear(self.n_heads * self.head_dim, cfg.hidden_size, bias=False)

    def forward(self, x: Tensor, cos: Tensor, sin: Tensor, mask: AttentionMask, kv_cache: KVCache | None) -> Tensor:
        b, t, _ = x.shape
        q = self.q_proj(x).view(b, t, self.n_heads, self.head_dim).transpose(1, 2)
        k = self.k_proj(x).view(b, t, self.n_kv, self.head_dim).transpose(1, 2)
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
        self.rotary = RotaryEmbedding(cfg.head_dim, cfg.rope_theta)


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
    """A Transformer from an HF-format folder (ours, or a compatible Qwen2/Llama checkpoint)."""
    cfg = load_config(directory)
    model = Transformer(cfg)
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
]
