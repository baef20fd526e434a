"""Small served models for tests and demos: `python -m trainflow_trainer.serve.fixture OUT_DIR`.

Writes OUT_DIR/tokenizer.json (a byte-level BPE trained on lowercase text only, so upper-case letters are
single tokens that never merge: sampling restricted to them gives outputs that re-tokenise identically) and
two committed checkpoints OUT_DIR/step-000001 and OUT_DIR/step-000002 with different random weights, each in
the contract's commit layout. Prints a JSON summary (paths, the ids of 'X', 'Y', 'Z' and <|im_end|>).
With `--vllm` it also writes OUT_DIR/vllm-policy: the same tokenizer under a model vLLM's CPU attention can
serve (head_dim 32; the micro model's 16 is below its minimum), as a plain Hugging Face folder.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import sys
from pathlib import Path

import torch

from ..model import ModelConfig, Transformer, save_pretrained
from ..tokenizer import IM_END, train_tokenizer

TEXTS = [
    "the quick brown fox jumps over the lazy dog",
    "def add(a, b):\n    return a + b\n",
    "run the tests and read the output of the tool call",
    "hello world, this is a small corpus for a tiny tokenizer",
    '{"name": "python", "arguments": {"code": "print(1 + 2)"}}',
] * 4


def micro_config(vocab_size: int) -> ModelConfig:
    return ModelConfig(
        vocab_size=vocab_size,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=1024,
    )


def vllm_config(vocab_size: int) -> ModelConfig:
    return ModelConfig(
        vocab_size=vocab_size,
        hidden_size=128,
        intermediate_size=256,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=1024,
    )


def write_committed(model: Transformer, folder: Path, step: int, extra_files: dict[str, bytes] | None = None) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    names = save_pretrained(model, folder)
    for name, data in (extra_files or {}).items():
        (folder / name).write_bytes(data)
        names.append(name)
    files = []
    for name in names:
        data = (folder / name).read_bytes()
        files.append({"path": name, "size": len(data), "sha256": hashlib.sha256(data).hexdigest()})
    commit = {
        "format": 1,
        "step": step,
        "final": False,
        "created_at": datetime.datetime.now(datetime.UTC).isoformat(),
        "files": files,
    }
    (folder / "COMMIT.json").write_text(json.dumps(commit))


def build(out: Path, seed: int = 0, vllm: bool = False) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    tok = train_tokenizer(TEXTS, vocab_size=400, min_frequency=2)
    tok.save(out)
    tok_bytes = (out / "tokenizer.json").read_bytes()
    cfg = micro_config(tok.vocab_size)
    paths = []
    for k, step in enumerate((1, 2)):
        torch.manual_seed(seed * 100 + k)
        # Larger-than-default init so the two versions give clearly different distributions.
        model = Transformer(cfg)
        with torch.no_grad():
            for p in model.parameters():
                if p.dim() > 1:
                    p.normal_(0, 0.2)
        folder = out / f"step-{step:06d}"
        write_committed(model, folder, step, {"tokenizer.json": tok_bytes})
        paths.append(str(folder))
    letters = {c: tok.encode(c)[0] for c in "XYZ"}
    extra: dict[str, str] = {}
    if vllm:
        torch.manual_seed(seed * 100 + 50)
        model = Transformer(vllm_config(tok.vocab_size))
        with torch.no_grad():
            for p in model.parameters():
                if p.dim() > 1:
                    p.normal_(0, 0.2)
        folder = out / "vllm-policy"
        save_pretrained(model, folder)
        tok.save(folder)
        extra["vllm_policy"] = str(folder)
    return {
        **extra,
        "tokenizer": str(out / "tokenizer.json"),
        "checkpoints": paths,
        "letters": letters,
        "im_end": tok.special_ids[IM_END],
        "vocab_size": tok.vocab_size,
    }


if __name__ == "__main__":
    args = [a for a in sys.argv[1:] if a != "--vllm"]
    print(json.dumps(build(Path(args[0]), int(args[1]) if len(args) > 1 else 0, vllm="--vllm" in sys.argv)))
