"""A stage trains from a transformers-made Qwen3 / Llama 3.x checkpoint and commits that family again.

The checkpoint is what `save_pretrained` of a stock transformers model writes (no download: a random tiny model
from the family's config class); the job is the real subprocess; its committed weights load in transformers as
the same family and give our model's logits.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from conftest import TEST_MODEL_OVERRIDES, make_spec, run_job, write_spec

from trainflow_trainer.model import load_pretrained


def hf_checkpoint(family: str, vocab: int, folder: Path) -> str:
    from transformers import AutoModelForCausalLM, LlamaConfig, Qwen3Config

    shape: dict[str, Any] = dict(TEST_MODEL_OVERRIDES, vocab_size=vocab, max_position_embeddings=256)
    if family == "qwen3":
        cfg: Any = Qwen3Config(**shape, head_dim=24, tie_word_embeddings=True)
    else:
        rope = {"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0, "low_freq_factor": 1.0}
        rope |= {"high_freq_factor": 4.0, "original_max_position_embeddings": 64}
        cfg = LlamaConfig(**shape, tie_word_embeddings=False, rope_parameters=rope)
    torch.manual_seed(0)
    hf = AutoModelForCausalLM.from_config(cfg)
    hf.save_pretrained(folder)
    return type(hf).__name__


@pytest.mark.parametrize("family", ["qwen3", "llama3"])
def test_sft_stage_from_a_transformers_checkpoint(tmp_path, demo_dir, tok, family):
    from transformers import AutoModelForCausalLM

    arch = hf_checkpoint(family, tok.vocab_size, tmp_path / "ckpt")
    model = {"init": {"checkpoint": str(tmp_path / "ckpt")}, "tokenizer": {"path": str(demo_dir / "tokenizer.json")}}
    spec = make_spec(
        demo_dir,
        str(tmp_path / "out"),
        tmp_path / "work",
        kind="sft",
        steps=2,
        every=2,
        model=model,
        packing={"mode": "trie"},
    )
    r = run_job(write_spec(spec, tmp_path / "spec.json"))
    assert r.returncode == 0, r.stderr
    final = tmp_path / "out" / "step-000002"
    assert json.loads((final / "config.json").read_text())["architectures"] == [arch]
    ours = load_pretrained(final).eval()
    before = load_pretrained(tmp_path / "ckpt")
    assert any(not torch.equal(a, b) for a, b in zip(ours.state_dict().values(), before.state_dict().values()))
    hf = AutoModelForCausalLM.from_pretrained(final, dtype=torch.float32).eval()
    assert type(hf).__name__ == arch
    ids = torch.randint(0, tok.vocab_size, (1, 20))
    with torch.no_grad():
        assert (ours(ids) - hf(input_ids=ids).logits).abs().max().item() <= 1e-5
