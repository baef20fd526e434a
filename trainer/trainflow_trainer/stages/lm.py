"""The shared runner of token-level LM stages (midtrain, sft): data from the stage's `data` block, packed flat
(midtrain, sft packing.mode flat) or as whole conversations for trie packing (sft packing.mode trie: batch_size
counts conversations, packing.max_tokens is the token budget of one packed forward); opening, checkpoints, the
loop and resume are the stage runtime's (runtime.py). The stage and model blocks arrive resolved (the contract's
StageConfig and ModelBlock): every field is there, with the schema's defaults and checks.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import torch

from ..data import load_stream, make_packer
from ..runtime import Extra, open_stage, run_loop
from ..train import micro_batch_size, train_step, train_step_trie

if TYPE_CHECKING:
    from ..job import JobContext


def run_lm_stage(ctx: JobContext, kind: str) -> None:
    d, stage = ctx.dist, ctx.spec.stage
    tcfg, data = stage.train, stage.data
    assert data is not None and tcfg is not None, "the schema requires data and train blocks of midtrain and sft"
    # midtrain has no packing block: documents are packed flat
    mode, max_tokens = (stage.packing.mode, stage.packing.max_tokens) if stage.packing else ("flat", 0)
    micro_batch_size(tcfg, d.world)
    st = open_stage(ctx, seq_len=data.seq_len)
    if st is None:
        return
    stream = load_stream(data.sources, ctx.storage, st.tok, kind, tcfg.seed)
    packer = make_packer(mode, stream, data.seq_len, st.tok)
    if st.found is not None:
        packer.load_state_dict(st.state["data"])
    history: list[float] = list(st.state.get("loss_history", []))
    # bf16 autocast over fp32 master weights on GPU; CPU runs stay fp32 (exact, and CPU bf16 is slow).
    autocast = torch.bfloat16 if d.device.type == "cuda" and ctx.spec.model.dtype in ("auto", "bf16") else None
    t_start, tokens_seen = time.perf_counter(), 0.0

    def step_fn(step: int) -> dict[str, float]:
        nonlocal tokens_seen
        batch = packer.next_batch(tcfg.batch_size)
        t0 = time.perf_counter()
        if mode == "trie":
            m = train_step_trie(st.model, st.optimizer, batch, step, tcfg, d, autocast, max_tokens)
        else:
            m = train_step(st.model, st.optimizer, batch, step, tcfg, d, autocast)
        dt = time.perf_counter() - t0
        tokens_seen += m["tokens"]
        history.append(m["loss"])
        return {
            **m,
            "tokens_per_s": m["tokens"] / dt if dt > 0 else 0.0,
            "avg_tokens_per_s": tokens_seen / (time.perf_counter() - t_start),
        }

    run_loop(ctx, st, step_fn, lambda: Extra({"data": packer.state_dict(), "loss_history": history}))


__all__ = ["run_lm_stage"]
