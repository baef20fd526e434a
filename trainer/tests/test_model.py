"""The model: HF parity, HF-format save/load (sharded too), attention masks, KV cache, presets."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
import torch

from trainflow_trainer.attention import CausalMask, DenseMask, DocumentMask
from trainflow_trainer.model import (
    PRESETS,
    KVCache,
    ModelConfig,
    Transformer,
    load_pretrained,
    preset,
    rope_inv_freq,
    save_pretrained,
)

SMALL: dict[str, Any] = dict(
    vocab_size=300,
    hidden_size=64,
    intermediate_size=96,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
)


def random_model(seed=0, **kw) -> Transformer:
    torch.manual_seed(seed)
    m = Transformer(preset("tiny", **{**SMALL, **kw}))
    with torch.no_grad():  # non-trivial biases and norm scales, so parity covers them
        for name, p in m.named_parameters():
            if name.endswith("bias") or "norm" in name:
                p.normal_(0, 0.1)
    return m.eval()


# Each family as our fields: Qwen2 (q/k/v bias), Qwen3 (q/k norm, a head_dim of its own), Llama 2, Llama 3.x
# (llama3 RoPE; the original context is small so the scaling changes frequencies at this head_dim).
LLAMA3_ROPE: dict[str, Any] = dict(
    rope_theta=500000.0, rope_scaling_factor=8.0, rope_original_max_position_embeddings=64
)
FAMILY_FIELDS: dict[str, dict[str, Any]] = {
    "qwen2": dict(attention_bias=True),
    "qwen3": dict(attention_bias=False, qk_norm=True, head_dim=24),
    "llama": dict(attention_bias=False),
    "llama3": dict(attention_bias=False, **LLAMA3_ROPE),
}
ARCH = {
    "qwen2": "Qwen2ForCausalLM",
    "qwen3": "Qwen3ForCausalLM",
    "llama": "LlamaForCausalLM",
    "llama3": "LlamaForCausalLM",
}


def hf_config(family: str, tie: bool):
    """The same families as transformers configs, built the way a real checkpoint's config.json would be."""
    from transformers import LlamaConfig, Qwen2Config, Qwen3Config

    shape: dict[str, Any] = dict(SMALL, max_position_embeddings=512, tie_word_embeddings=tie)
    if family == "qwen2":
        return Qwen2Config(**shape)
    if family == "qwen3":
        return Qwen3Config(**shape, head_dim=24)
    if family == "llama":
        return LlamaConfig(**shape)
    llama3: dict[str, Any] = {"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0, "low_freq_factor": 1.0}
    return LlamaConfig(
        **shape, rope_parameters={**llama3, "high_freq_factor": 4.0, "original_max_position_embeddings": 64}
    )


def float64_norms(hf: torch.nn.Module) -> torch.nn.Module:
    """transformers' RMSNorm computes in float32 even in a float64 model (ours keeps float64, which the float64
    exactness tests need); for a float64 parity test its norms get float64 arithmetic, nothing else changes."""

    def forward(self, x):
        y = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.variance_epsilon)
        return self.weight * y

    for m in hf.modules():
        if type(m).__name__.endswith("RMSNorm"):
            m.forward = forward.__get__(m)
    return hf


def positions(t: int) -> torch.Tensor:
    return torch.stack([torch.arange(t), torch.randint(0, 400, (t,))])  # explicit, non-contiguous positions too


@pytest.mark.parametrize("family", list(FAMILY_FIELDS))
@pytest.mark.parametrize("tie", [True, False])
def test_hf_checkpoint_logits_match_transformers(tmp_path, family, tie):
    """A random HF checkpoint of each family (save_pretrained), read by load_pretrained: float64 logits equal."""
    from transformers import AutoModelForCausalLM

    torch.manual_seed(1)
    hf = AutoModelForCausalLM.from_config(hf_config(family, tie)).double().eval()
    with torch.no_grad():  # non-trivial biases and norm scales (q/k norms included), so parity covers them
        for name, p in hf.named_parameters():
            if name.endswith("bias") or "norm" in name:
                p.normal_(1.0 if "norm" in name else 0.0, 0.1)
    hf.save_pretrained(tmp_path)
    hf = AutoModelForCausalLM.from_pretrained(tmp_path, dtype=torch.float64).eval()  # both read the same file
    ours = load_pretrained(tmp_path, dtype=torch.float64).eval()
    assert ours.config.model_type == ("llama" if family == "llama3" else family)
    assert sum(p.numel() for p in ours.parameters()) == ours.config.num_params()
    ids = torch.randint(0, 300, (2, 33))
    pos = positions(33)
    with torch.no_grad():
        theirs = float64_norms(hf)(input_ids=ids, position_ids=pos).logits
        got = ours(ids, pos)
    assert got.dtype == torch.float64
    assert (got - theirs).abs().max().item() <= 1e-10


@pytest.mark.parametrize("family", list(FAMILY_FIELDS))
@pytest.mark.parametrize("tie", [True, False])
def test_logits_match_transformers(tmp_path, family, tie):
    """Our save_pretrained, read by transformers as that family: float32 logits equal (stock HF, unpatched)."""
    from transformers import AutoModelForCausalLM

    m = random_model(**{"tie_word_embeddings": tie, "rope_theta": 5000.0, **FAMILY_FIELDS[family]})
    save_pretrained(m, tmp_path)
    cfg = json.loads((tmp_path / "config.json").read_text())
    assert cfg["architectures"] == [ARCH[family]]
    hf = AutoModelForCausalLM.from_pretrained(tmp_path, dtype=torch.float32).eval()
    assert type(hf).__name__ == ARCH[family]
    ids = torch.randint(0, 300, (2, 33))
    pos = positions(33)
    with torch.no_grad():
        ours, theirs = m(ids, pos), hf(input_ids=ids, position_ids=pos).logits
    assert ours.dtype == torch.float32
    assert (ours - theirs).abs().max().item() <= 1e-5


def test_llama3_rope_scaling_changes_only_long_wavelengths():
    plain = rope_inv_freq(preset("tiny", **SMALL, attention_bias=False, rope_theta=500000.0))
    scaled = rope_inv_freq(preset("tiny", **SMALL, **FAMILY_FIELDS["llama3"]))
    wavelen = 2 * torch.pi / plain
    short, long = wavelen < 64 / 4.0, wavelen > 64 / 1.0
    assert short.any() and long.any()
    assert torch.equal(scaled[short], plain[short])
    torch.testing.assert_close(scaled[long], plain[long] / 8.0)
    mid = ~short & ~long
    assert torch.all((scaled[mid] < plain[mid]) & (scaled[mid] > plain[mid] / 8.0))


@pytest.mark.parametrize(
    "change,message",
    [
        ({"model_type": "mistral"}, "unsupported model_type 'mistral' (supported: Qwen2ForCausalLM (model_type qwen2)"),
        ({"architectures": ["Qwen2ForSequenceClassification"]}, "unsupported architectures"),
        (
            {"model_type": "llama", "architectures": ["LlamaForCausalLM"], "attention_bias": True},
            "llama with a q/k/v/o",
        ),
        ({"hidden_act": "gelu"}, "only silu"),
        ({"use_sliding_window": True}, "sliding-window attention is not implemented"),
        ({"rope_parameters": {"rope_type": "yarn", "factor": 4.0}}, "rope type 'yarn' is not implemented"),
    ],
)
def test_unsupported_checkpoints_are_refused_naming_the_supported(change, message):
    d = {**preset("tiny").to_hf_dict(), **change}
    with pytest.raises(ValueError, match=re.escape(message)):
        ModelConfig.from_hf_dict(d)


def test_sharded_save_round_trip(tmp_path):
    m = random_model(tie_word_embeddings=False)
    files = save_pretrained(m, tmp_path, max_shard_bytes=60_000)
    index = json.loads((tmp_path / "model.safetensors.index.json").read_text())
    shards = sorted(set(index["weight_map"].values()))
    assert len(shards) > 1 and set(shards) <= set(files)
    assert set(index["weight_map"]) == set(m.state_dict())
    loaded = load_pretrained(tmp_path)
    for k, v in m.state_dict().items():
        assert torch.equal(v, loaded.state_dict()[k]), k


def test_tied_embeddings_share_storage(tmp_path):
    m = random_model(tie_word_embeddings=True)
    assert m.lm_head.weight is m.model.embed_tokens.weight
    save_pretrained(m, tmp_path)
    loaded = load_pretrained(tmp_path)
    assert loaded.lm_head.weight is loaded.model.embed_tokens.weight


def test_document_mask_blocks_other_documents():
    doc = torch.tensor([[0, 0, 0, 1, 1, 2, 2, 2]])
    allowed = DocumentMask(doc).allowed()[0]
    for i in range(8):
        for j in range(8):
            assert bool(allowed[i, j]) == (j <= i and doc[0, i] == doc[0, j]), (i, j)


def test_document_mask_equals_separate_sequences():
    m = random_model()
    a, b = torch.randint(0, 300, (1, 5)), torch.randint(0, 300, (1, 7))
    packed = torch.cat([a, b], 1)
    pos = torch.cat([torch.arange(5), torch.arange(7)])[None]
    doc = torch.tensor([[0] * 5 + [1] * 7])
    with torch.no_grad():
        out = m(packed, pos, DocumentMask(doc))
        assert torch.allclose(out[:, :5], m(a), atol=1e-5)
        assert torch.allclose(out[:, 5:], m(b), atol=1e-5)


def test_document_mask_gradient_does_not_cross_documents():
    """A token's loss has exactly zero gradient w.r.t. other documents' input embeddings."""
    m = random_model()
    ids = torch.randint(0, 300, (1, 10))
    doc = torch.tensor([[0] * 4 + [1] * 6])
    pos = torch.tensor([list(range(4)) + list(range(6))])
    emb = m.model.embed_tokens(ids).detach().requires_grad_(True)
    # Run the model from embeddings (same code path as forward after the lookup).
    x = emb
    cos, sin = m.model.rotary(pos, x.dtype)
    for layer in m.model.layers:
        x = layer(x, cos, sin, DocumentMask(doc), None)
    logits = m.lm_head(m.model.norm(x))
    logits[0, 7].logsumexp(-1).backward()  # a loss on one token of document 1
    assert torch.all(emb.grad[0, :4] == 0)  # document 0: exactly nothing
    assert torch.all(emb.grad[0, 8:] == 0)  # later tokens of its own document: causal
    assert emb.grad[0, 4:8].abs().sum() > 0  # its own past: something


def test_dense_mask_equals_causal():
    m = random_model()
    ids = torch.randint(0, 300, (2, 9))
    allowed = torch.tril(torch.ones(9, 9, dtype=torch.bool))[None].expand(2, 9, 9)
    with torch.no_grad():
        assert torch.allclose(m(ids, attention=DenseMask(allowed)), m(ids, attention=CausalMask()), atol=1e-6)


def test_kv_cache_decoding_matches_full_forward():
    m = random_model()
    ids = torch.randint(0, 300, (2, 12))
    with torch.no_grad():
        full = m(ids)
        cache = KVCache(m.config.num_hidden_layers)
        first = m(ids[:, :8], kv_cache=cache)
        steps = [m(ids[:, t : t + 1], kv_cache=cache) for t in range(8, 12)]
    assert torch.allclose(first, full[:, :8], atol=1e-5)
    assert torch.allclose(torch.cat(steps, 1), full[:, 8:], atol=1e-5)


def test_presets_sizes_and_overrides():
    assert 1e6 < PRESETS["tiny"].num_params() < 1e7
    assert 30e6 <= PRESETS["small"].num_params() <= 60e6
    assert 0.9e9 < PRESETS["1b"].num_params() < 1.3e9
    m = Transformer(preset("tiny", vocab_size=123))
    assert sum(p.numel() for p in m.parameters()) == preset("tiny", vocab_size=123).num_params()
    with pytest.raises(KeyError, match="unknown model preset"):
        preset("huge")
    with pytest.raises(KeyError, match="unknown model config field"):
        preset("tiny", hiden_size=3)
    for fields in FAMILY_FIELDS.values():
        cfg = preset("tiny", **fields)
        assert ModelConfig.from_hf_dict(cfg.to_hf_dict()) == cfg
