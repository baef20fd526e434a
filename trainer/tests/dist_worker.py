"""One process of the multi-rank exactness tests (test_fsdp.py): a few optimizer steps of midtrain (flat
documents) or SFT (flat rows or trie-packed conversations) on a tiny model, under torchrun or alone. Rank 0
saves, per step, the global loss and every parameter's full gradient (gathered from the FSDP shards) before
the optimizer step, so the test compares one process with N exactly.

    python -m torch.distributed.run --nproc_per_node 2 tests/dist_worker.py --out F --cases '{"t": {"mode": "trie"}}'

Several cases run one after another in one process group (start-up is most of a small run's time).
"""

from __future__ import annotations

import argparse
import json

import numpy as np
import torch
import torch.distributed as dist

from trainflow_trainer.contract import TrainConfig
from trainflow_trainer.data import Example, ExampleStream, make_packer
from trainflow_trainer.model import ModelConfig, Transformer
from trainflow_trainer.train import (
    Dist,
    FsdpOptions,
    accumulate_gradients,
    accumulate_gradients_trie,
    build_optimizer,
    init_distributed,
    lr_at,
    optimizer_step,
    parallelize,
)

VOCAB = 11
CFG = ModelConfig(
    vocab_size=VOCAB,
    hidden_size=32,
    intermediate_size=48,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=128,
)


def rows(kind: str, n: int, seed: int) -> list[dict]:
    """Documents, or conversations that share a few prompts (so the trie has prefixes to share)."""
    rng = np.random.default_rng(seed)
    prompts = [rng.integers(1, VOCAB, int(rng.integers(8, 13))).tolist() for _ in range(3)]
    out = []
    for _ in range(n):
        if kind == "midtrain":
            out.append({"ids": rng.integers(1, VOCAB, int(rng.integers(5, 30))).tolist(), "prompt": 0})
        else:
            p = prompts[int(rng.integers(len(prompts)))]
            out.append({"ids": p + rng.integers(1, VOCAB, int(rng.integers(9, 15))).tolist(), "prompt": len(p)})
    return out


def to_example(kind: str):
    def f(row: dict, where: str) -> Example:
        ids, k = row["ids"], row["prompt"]
        return Example(ids, [False] * max(1, k) + [True] * (len(ids) - max(1, k)), kind == "midtrain")

    return f


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--cases", required=True, help="JSON: {name: {mode, dtype, ...}}, run one after another")
    a = ap.parse_args()
    d = init_distributed()
    results = {name: run_case(d, **case) for name, case in json.loads(a.cases).items()}
    if d.is_main:
        torch.save(results, a.out)
    if d.distributed:
        dist.destroy_process_group()


def run_case(
    d: Dist,
    mode: str,
    steps: int = 3,
    batch_size: int = 8,
    micro: int = 2,
    max_tokens: int = 56,
    dtype: str = "float64",
    mixed_precision: str = "fp32",
    activation_checkpointing: bool = False,
    cpu_offload: bool = False,
) -> dict:
    torch.set_default_dtype(getattr(torch, dtype))
    torch.manual_seed(0)
    transformer = Transformer(CFG).to(getattr(torch, dtype))
    opts = FsdpOptions(mixed_precision, activation_checkpointing, cpu_offload)
    block_calls = [0]
    block = transformer.model.layers[0]
    block.register_forward_pre_hook(lambda *_: block_calls.__setitem__(0, block_calls[0] + 1))
    seen_dtypes: list[str] = []
    mlp: torch.nn.Module = block.mlp  # type: ignore[assignment]
    mlp.register_forward_pre_hook(
        lambda mod, _: seen_dtypes.append(str(next(mod.parameters()).dtype).removeprefix("torch."))
    )
    model = parallelize(transformer, d, opts)
    cfg = TrainConfig.model_validate(
        {
            "steps": steps,
            "batch_size": batch_size,
            "micro_batch_size": micro,
            "lr": 1e-2,
            "min_lr": 1e-3,
            "warmup_steps": 0,
            "weight_decay": 0.1,
            "betas": [0.9, 0.95],
            "grad_clip": 1.0,
            "seed": 0,
        }
    )
    optimizer = build_optimizer(model, cfg)
    kind = "midtrain" if mode == "midtrain" else "sft"
    stream = ExampleStream([rows(kind, 40, 1)], [1.0], 0, to_example(kind), ["synthetic"])
    packer = make_packer("trie" if mode == "trie" else "flat", stream, 32, _Pad())  # type: ignore[arg-type]
    record: dict = {"loss": [], "grads": [], "metrics": [], "world": d.world}
    for step in range(steps):
        batch = packer.next_batch(cfg.batch_size)
        if mode == "trie":
            m = accumulate_gradients_trie(model, batch, cfg, d, None, max_tokens)
        else:
            m = accumulate_gradients(model, batch, cfg, d, None)
        grads = {n: _full(p.grad) for n, p in model.named_parameters()}
        optimizer_step(model, optimizer, lr_at(step, cfg), cfg.grad_clip)
        record["loss"].append(m["loss"])
        record["grads"].append(grads)
        record["metrics"].append(m)
    record["block_calls"] = block_calls[0]
    record["seen_dtypes"] = sorted(set(seen_dtypes))
    record["sharded"] = all(type(p).__name__ == "DTensor" for p in model.parameters())
    record["offload"] = _offload_policy(model)
    torch.set_default_dtype(torch.float32)
    return record


def _offload_policy(model: torch.nn.Module) -> str:
    """The FSDP2 offload policy the root's parameter group runs under ("" when not sharded)."""
    get_state = getattr(model, "_get_fsdp_state", None)
    if get_state is None:
        return ""
    group = get_state()._fsdp_param_group
    return type(group.offload_policy).__name__ if group is not None else ""


class _Pad:
    pad_id = 0


def _full(g: torch.Tensor | None) -> torch.Tensor:
    assert g is not None
    full = getattr(g, "full_tensor", None)  # a DTensor shard under FSDP: all-gathered (a collective)
    return (full() if full is not None else g).detach().cpu().clone()


if __name__ == "__main__":
    main()
