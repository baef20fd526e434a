"""One process of `make bench-distributed` (bench/distributed/run.py starts it alone or under torchrun): the `tiny`
preset trained for a few steps per row (midtrain flat, sft flat, sft trie) on the demo corpora, FSDP2 over gloo
when there are several ranks. Rank 0 writes {row: {tokens_per_s, ...}} as JSON.

Tokens per second: the global batch's tokens (all ranks together) per second of step wall time, the step
bracketed by barriers so the slowest rank sets it.
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
import torch.distributed as dist  # noqa: E402

from trainflow_trainer.contract import DataSource, TrainConfig  # noqa: E402
from trainflow_trainer.contract.models import Fsdp  # noqa: E402
from trainflow_trainer.data import load_stream, make_packer  # noqa: E402
from trainflow_trainer.demo_data import CODE_FILE, SFT_FILE, TOOLS_FILE  # noqa: E402
from trainflow_trainer.model import Transformer, preset  # noqa: E402
from trainflow_trainer.storage import Storage  # noqa: E402
from trainflow_trainer.tokenizer import Tokenizer  # noqa: E402
from trainflow_trainer.train import (  # noqa: E402
    Dist,
    build_optimizer,
    init_distributed,
    parallelize,
    train_step,
    train_step_trie,
)

ROWS = {"midtrain-flat": ("midtrain", "flat"), "sft-flat": ("sft", "flat"), "sft-trie": ("sft", "trie")}


def measure(d: Dist, data: Path, tok: Tokenizer, stage: str, packing: str, a: argparse.Namespace) -> dict:
    files = [CODE_FILE, TOOLS_FILE] if stage == "midtrain" else [SFT_FILE]
    sources = [DataSource(path=str(data / f), weight=1.0, format="jsonl", kind="rows") for f in files]
    packer = make_packer(packing, load_stream(sources, Storage(), tok, stage, 0), a.seq_len, tok)
    torch.manual_seed(0)
    model = parallelize(Transformer(preset("tiny", vocab_size=tok.vocab_size)), d)
    cfg = TrainConfig(
        steps=a.steps + 1,
        batch_size=a.batch_size,
        micro_batch_size=a.micro_batch_size,
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
    batches = [packer.next_batch(a.batch_size) for _ in range(a.steps + 1)]  # data prep is not timed

    def step(s: int) -> dict[str, float]:
        if packing == "trie":
            return train_step_trie(model, opt, batches[s], s, cfg, d, None, a.max_tokens)
        return train_step(model, opt, batches[s], s, cfg, d, None)

    step(0)  # warm-up
    tokens, elapsed, losses = 0, 0.0, []
    for s in range(1, a.steps + 1):
        if d.distributed:
            dist.barrier()
        t0 = time.perf_counter()
        m = step(s)
        if d.distributed:
            dist.barrier()
        elapsed += time.perf_counter() - t0
        tokens += batches[s].num_tokens()
        losses.append(m["loss"])
    return {"tokens_per_s": tokens / elapsed, "step_s": elapsed / a.steps, "loss_last": losses[-1]}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--micro-batch-size", type=int, default=4)
    ap.add_argument("--seq-len", type=int, default=256)
    ap.add_argument("--max-tokens", type=int, default=1024)
    a = ap.parse_args()
    d = init_distributed()
    tok = Tokenizer.load(a.data)
    res = {row: measure(d, Path(a.data), tok, stage, packing, a) for row, (stage, packing) in ROWS.items()}
    if d.is_main:
        Path(a.out).write_text(json.dumps({"world": d.world, "threads": torch.get_num_threads(), "rows": res}))
    if d.distributed:
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
