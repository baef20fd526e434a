"""Trainer throughput on CPU: the `tiny` preset, mid-train (document-packed) and SFT (assistant-only loss)
steps on the demo corpora, measured side by side in one run.

    make bench-trainer      (= cd trainer && ../.venv/bin/python ../bench/trainer/run.py [--steps N])

Prints a table and writes bench/results/trainer.json with midtrain_tokens_per_s and sft_tokens_per_s
(all tokens of the packed rows, padding included, per second of optimizer-step wall time).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "trainer"))

import torch  # noqa: E402

from trainflow_trainer.contract import DataSource, TrainConfig  # noqa: E402
from trainflow_trainer.contract.models import Fsdp  # noqa: E402
from trainflow_trainer.data import FlatPacker, load_stream  # noqa: E402
from trainflow_trainer.demo_data import CODE_FILE, SFT_FILE, TOOLS_FILE, generate  # noqa: E402
from trainflow_trainer.model import Transformer, preset  # noqa: E402
from trainflow_trainer.storage import Storage  # noqa: E402
from trainflow_trainer.tokenizer import Tokenizer  # noqa: E402
from trainflow_trainer.train import Dist, build_optimizer, train_step  # noqa: E402


def measure(kind: str, data_dir: Path, tok: Tokenizer, steps: int, batch: int, micro: int, seq_len: int) -> dict:
    if kind == "midtrain":
        files = [CODE_FILE, TOOLS_FILE]
    else:
        files = [SFT_FILE]
    sources = [DataSource(path=str(data_dir / f), weight=1.0, format="jsonl", kind="rows") for f in files]
    packer = FlatPacker(load_stream(sources, Storage(), tok, kind, 0), seq_len, tok.pad_id)
    torch.manual_seed(0)
    model = Transformer(preset("tiny", vocab_size=tok.vocab_size))
    # every field explicit, as a resolved config holds them (the benchmark's settings, not defaults)
    cfg = TrainConfig(
        steps=steps + 1,
        batch_size=batch,
        micro_batch_size=micro,
        lr=1e-3,
        min_lr=1e-4,
        warmup_steps=1,
        weight_decay=0.1,
        betas=(0.9, 0.95),
        grad_clip=1.0,
        seed=0,
        fsdp=Fsdp(mixed_precision="fp32", activation_checkpointing=False, cpu_offload=False),
    )
    opt = build_optimizer(model, cfg)
    batches = [packer.next_batch(batch) for _ in range(steps + 1)]  # data prep is not timed
    train_step(model, opt, batches[0], 0, cfg, Dist(), None)  # warm-up
    tokens, targets, losses = 0, 0, []
    t0 = time.perf_counter()
    for s in range(1, steps + 1):
        m = train_step(model, opt, batches[s], s, cfg, Dist(), None)
        tokens += batches[s].num_tokens()
        targets += batches[s].num_targets()
        losses.append(m["loss"])
    dt = time.perf_counter() - t0
    return {
        "tokens_per_s": tokens / dt,
        "target_tokens_per_s": targets / dt,
        "step_s": dt / steps,
        "tokens_per_step": tokens // steps,
        "loss_first": losses[0],
        "loss_last": losses[-1],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--micro-batch-size", type=int, default=4)
    ap.add_argument("--seq-len", type=int, default=256)
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "trainer.json"))
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp)
        generate(data, seed=0, scale=0.2)
        tok = Tokenizer.load(data)
        res = {
            k: measure(k, data, tok, args.steps, args.batch_size, args.micro_batch_size, args.seq_len)
            for k in ("midtrain", "sft")
        }
    cfg = preset("tiny", vocab_size=tok.vocab_size)
    out = {
        "midtrain_tokens_per_s": round(res["midtrain"]["tokens_per_s"], 1),
        "sft_tokens_per_s": round(res["sft"]["tokens_per_s"], 1),
        "details": res,
        "setup": {
            "preset": "tiny",
            "params": cfg.num_params(),
            "vocab_size": cfg.vocab_size,
            "batch_size": args.batch_size,
            "micro_batch_size": args.micro_batch_size,
            "seq_len": args.seq_len,
            "steps": args.steps,
            "device": "cpu",
            "threads": torch.get_num_threads(),
            "dtype": "float32",
            "torch": torch.__version__,
            "machine": platform.machine(),
            # CPU numbers on a shared machine depend on what else runs: keep the load next to them.
            "load_average_1m_at_end": round(os.getloadavg()[0], 2),
        },
    }
    print(
        f"trainer bench: tiny preset ({cfg.num_params() / 1e6:.2f}M params), CPU x{torch.get_num_threads()} threads, "
        f"batch {args.batch_size} x seq {args.seq_len}, {args.steps} steps"
    )
    print(f"{'stage':<10}{'tokens/s':>12}{'targets/s':>12}{'s/step':>10}{'loss first→last':>20}")
    for k, r in res.items():
        print(
            f"{k:<10}{r['tokens_per_s']:>12.1f}{r['target_tokens_per_s']:>12.1f}{r['step_s']:>10.2f}"
            f"{r['loss_first']:>11.3f} → {r['loss_last']:.3f}"
        )
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
