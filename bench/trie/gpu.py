"""Trie packing vs flat on one GPU: FlexAttention tree masks, the `1b` preset in bf16, workloads (a) and (b).

    cd trainer && ../.venv/bin/python ../bench/trie/gpu.py      → bench/results/trie-gpu.json

(a) grpo: groups of 8 answers (128-512 tokens) to a 1024-token prompt; (b) agentic: per task a group of 8
tree-search rollouts (workloads.agentic) scaled up: a 4096-token system prompt, longer turns and tool outputs,
~20k-30k unique tokens per task tree, rollouts of ~6k-13k tokens. Step = forward + backward + AdamW step; same
batches for flat and trie, both through FlexAttention (flat = chains: block-diagonal causal BlockMask). Exits
with code 2 and a clear message when no CUDA device is present.

Under torchrun (`python -m torch.distributed.run --nproc_per_node N ../bench/trie/gpu.py`) the same workloads run
through the trainer's FSDP2 path (train.parallelize: fully_shard per block + root, NCCL): fp32 master weights
sharded, bf16 compute with fp32 gradient reduction (MixedPrecisionPolicy), every rank passing the whole batch
and training the packed micro-batches assigned to it (trie/distribute.py); rank 0 writes trie-gpu-fsdp2.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path[:0] = [str(ROOT / "trainer"), str(HERE)]

import workloads  # noqa: E402

from trainflow_trainer.model import Transformer, preset  # noqa: E402
from trainflow_trainer.train import Dist, FsdpOptions, init_distributed, parallelize  # noqa: E402
from trainflow_trainer.trie import LossSpec, build_forest, flat_forward_backward, packed_forward_backward  # noqa: E402

# workloads.agentic at GPU scale (the CPU bench uses its defaults)
GPU_AGENTIC = dict(
    system_len=4096,
    task_len=(512, 2048),
    turns=(4, 10),
    call_len=(50, 200),
    tool_len=(150, 700),
    answer_len=(50, 200),
    fork_turns=(1, 4),
)


def timed_step(model: torch.nn.Module, opt: torch.optim.Optimizer, fn, batch, spec, max_tokens: int, d: Dist) -> float:
    """Seconds of one forward + backward + AdamW step of `fn` (flat or packed) on the GPU; under several ranks,
    bracketed by barriers so the slowest rank sets it."""
    if d.distributed:
        torch.distributed.barrier()
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    opt.zero_grad(set_to_none=True)
    fn(model, batch, spec, max_tokens, attention="flex", rank=d.rank, world=d.world)
    opt.step()
    torch.cuda.synchronize()
    if d.distributed:
        torch.distributed.barrier()
    return time.perf_counter() - t0


def build_model(cfg, d: Dist, device: torch.device) -> torch.nn.Module:
    """One GPU: the model in bf16. Several: fp32 master weights sharded by FSDP2, bf16 compute (the trainer's
    train.fsdp.mixed_precision: bf16)."""
    if not d.distributed:
        return Transformer(cfg).to(device=device, dtype=torch.bfloat16)
    return parallelize(Transformer(cfg), d, FsdpOptions(mixed_precision="bf16"))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--preset", default="1b")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--max-tokens", type=int, default=32768)
    ap.add_argument("--grpo-groups", type=int, default=8)
    ap.add_argument("--agentic-tasks", type=int, default=2)
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "trie-gpu.json"))
    args = ap.parse_args()
    if not torch.cuda.is_available():
        print(
            "bench/trie/gpu.py needs a CUDA GPU (FlexAttention training has no CPU backward in torch 2.15); "
            "run bench/trie/run.py for the CPU comparison",
            file=sys.stderr,
        )
        sys.exit(2)

    d = init_distributed()
    device = d.device
    cfg = preset(args.preset)
    cases = {
        "grpo": (
            workloads.grpo(np.random.default_rng(0), cfg.vocab_size, groups=args.grpo_groups),
            LossSpec(kind="ppo", aggregation="seq_mean", eps_low=0.2, eps_high=0.2),
        ),
        "agentic": (
            workloads.agentic(np.random.default_rng(0), cfg.vocab_size, tasks=args.agentic_tasks, **GPU_AGENTIC),
            LossSpec(kind="ppo", aggregation="token_mean", eps_low=0.2, eps_high=0.28),
        ),
    }
    rows = []
    for name, (batch, spec) in cases.items():
        forest = build_forest(batch)
        total, unique = forest.total_tokens, forest.unique_tokens
        torch.manual_seed(0)
        model = build_model(cfg, d, device)
        opt = torch.optim.AdamW(model.parameters(), lr=1e-5)
        fns = {"flat": flat_forward_backward, "trie": packed_forward_backward}
        times: dict[str, list[float]] = {m: [] for m in fns}

        for fn in fns.values():  # warm-up: compiles FlexAttention for the shapes met
            timed_step(model, opt, fn, batch, spec, args.max_tokens, d)
            timed_step(model, opt, fn, batch, spec, args.max_tokens, d)
        torch.cuda.reset_peak_memory_stats()
        for _ in range(args.repeats):
            for mode, fn in fns.items():
                times[mode].append(timed_step(model, opt, fn, batch, spec, args.max_tokens, d))
        flat_s, trie_s = statistics.median(times["flat"]), statistics.median(times["trie"])
        ratio = total / unique
        row = {
            "name": name,
            "total_tokens": total,
            "unique_tokens": unique,
            "token_ratio": round(ratio, 4),
            "flat_step_s": round(flat_s, 4),
            "trie_step_s": round(trie_s, 4),
            "speedup": round(flat_s / trie_s, 4),
            "efficiency": round(flat_s / trie_s / ratio, 4),
            "trajectories": len(batch),
            "peak_mem_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2),
        }
        row["ranks"] = d.world
        rows.append(row)
        if d.is_main:
            print(json.dumps(row), flush=True)
        del model, opt
        torch.cuda.empty_cache()

    result = {
        "workloads": rows,
        "config": {
            "agentic_params": GPU_AGENTIC,
            "preset": args.preset,
            "dtype": "bfloat16" if d.world == 1 else "fp32 master, bf16 compute (FSDP2 MixedPrecisionPolicy)",
            "ranks": d.world,
            "sharding": "FSDP2 fully_shard per block + root" if d.distributed else "none",
            "attention": "flex",
            "max_tokens": args.max_tokens,
            "repeats": args.repeats,
            "device": torch.cuda.get_device_name(),
            "torch": torch.__version__,
        },
    }
    if d.distributed:
        torch.distributed.destroy_process_group()
        if not d.is_main:
            return
    out = Path(args.out if d.world == 1 else str(args.out).replace(".json", "-fsdp2.json"))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
