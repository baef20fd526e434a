"""Training throughput and MFU of the `1b` preset in bf16 on one GPU.

    cd trainer && ../.venv/bin/python ../bench/trainer/gpu.py [--seq-len 2048] [--micro-batch 8] [--steps 10]

Causal-LM steps (AdamW, fp32 master weights, bf16 autocast, SDPA flash attention) on random tokens; one
warm-up step, then `--steps` timed. MFU = achieved model FLOP/s ÷ the GPU's dense bf16 peak, with model
FLOPs per token = 6·N (N = parameters, embeddings included when tied to the output layer) + 12·L·H·T
(attention scores and values, forward + backward). Prints a table, writes bench/results/trainer_gpu.json.
Exits 1 with "no CUDA" where no GPU is visible.

Under torchrun (`python -m torch.distributed.run --nproc_per_node N ../bench/trainer/gpu.py`) the model goes through
the trainer's FSDP2 path (train.parallelize: fully_shard per block + root over NCCL, fp32 master weights sharded,
bf16 compute with fp32 gradient reduction); each rank trains its own micro-batch, tokens/s and MFU count all
ranks (MFU against N × the peak); rank 0 writes trainer_gpu_fsdp2.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "trainer"))

import torch  # noqa: E402

from trainflow_trainer.model import Transformer, preset  # noqa: E402
from trainflow_trainer.train import FsdpOptions, init_distributed, parallelize  # noqa: E402

# Dense bf16 tensor-core peaks (FLOP/s), by a substring of torch.cuda.get_device_name().
PEAK_BF16 = {
    "H200": 989e12,
    "H100": 989e12,
    "H800": 989e12,
    "A100": 312e12,
    "A800": 312e12,
    "L40S": 362e12,
    "A10G": 70e12,
    "L4": 121e12,
    "RTX 4090": 165e12,
}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--preset", default="1b")
    ap.add_argument("--seq-len", type=int, default=2048)
    ap.add_argument("--micro-batch", type=int, default=8)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--compile", action="store_true", help="torch.compile the model")
    ap.add_argument("--peak-tflops", type=float, default=None, help="override the GPU's bf16 peak")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "trainer_gpu.json"))
    args = ap.parse_args()
    if not torch.cuda.is_available():
        print(
            "trainer gpu bench: no CUDA device visible (torch.cuda.is_available() is False); "
            "run it on a machine with a GPU",
            file=sys.stderr,
        )
        return 1
    d = init_distributed()
    dev = d.device
    name = torch.cuda.get_device_name(dev)
    peak = args.peak_tflops * 1e12 if args.peak_tflops else next((v for k, v in PEAK_BF16.items() if k in name), None)

    cfg = preset(args.preset)
    torch.manual_seed(0)
    # several ranks: FSDP2 with bf16 parameters in compute (MixedPrecisionPolicy) instead of autocast
    if d.distributed:
        model: torch.nn.Module = parallelize(Transformer(cfg), d, FsdpOptions(mixed_precision="bf16"))
    else:
        model = Transformer(cfg).to(dev)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, betas=(0.9, 0.95), weight_decay=0.1, fused=True)
    fwd = torch.compile(model) if args.compile else model
    b, t = args.micro_batch, args.seq_len
    torch.manual_seed(1 + d.rank)  # each rank its own rows
    ids = torch.randint(0, cfg.vocab_size, (b, t + 1), device=dev)
    x, y = ids[:, :-1], ids[:, 1:]

    def step() -> float:
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=not d.distributed):
            logits = fwd(x)
        loss = torch.nn.functional.cross_entropy(logits.float().reshape(-1, cfg.vocab_size), y.reshape(-1))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss

    step()
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    if d.distributed:
        torch.distributed.barrier()
    t0 = time.perf_counter()
    for _ in range(args.steps):
        loss = step()
    torch.cuda.synchronize()
    if d.distributed:
        torch.distributed.barrier()
    dt = (time.perf_counter() - t0) / args.steps
    tokens = b * t * d.world
    peak = peak * d.world if peak else None
    n = cfg.num_params()
    flops_per_token = 6 * n + 12 * cfg.num_hidden_layers * cfg.hidden_size * t
    achieved = flops_per_token * tokens / dt
    res = {
        "gpu": name,
        "preset": args.preset,
        "params": n,
        "seq_len": t,
        "micro_batch": b,
        "steps": args.steps,
        "compile": args.compile,
        "step_s": dt,
        "tokens_per_s": tokens / dt,
        "model_tflops": achieved / 1e12,
        "peak_bf16_tflops": peak / 1e12 if peak else None,
        "mfu": achieved / peak if peak else None,
        "max_memory_gib": torch.cuda.max_memory_allocated() / 2**30,
        "final_loss": float(loss),
        "torch": torch.__version__,
        "ranks": d.world,
        "sharding": "FSDP2 fully_shard per block + root, bf16 MixedPrecisionPolicy" if d.distributed else "none",
    }
    if d.distributed:
        torch.distributed.destroy_process_group()
        if not d.is_main:
            return 0
        args.out = str(args.out).replace(".json", "_fsdp2.json")
    print(f"{'gpu':<28}{'params':>10}{'tokens/s':>12}{'TFLOP/s':>10}{'MFU':>8}{'mem GiB':>9}")
    mfu = f"{res['mfu']:.1%}" if res["mfu"] is not None else "n/a"
    print(
        f"{name[:27]:<28}{n / 1e9:>9.2f}B{res['tokens_per_s']:>12.0f}{res['model_tflops']:>10.1f}{mfu:>8}"
        f"{res['max_memory_gib']:>9.1f}"
    )
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(res, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
