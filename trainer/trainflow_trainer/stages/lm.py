"""The shared runner of token-level LM stages (midtrain, sft): resolve tokenizer, model and data, resume
from the latest committed checkpoint, train, checkpoint every N steps and at the end, stop cleanly on SIGTERM.

Stage config fields read here (snake_case, under the spec's `stage`):
    data.sources[]: {path, weight=1, format=jsonl|parquet}   data.seq_len (int, default 512)
    train: see train.TrainConfig
    checkpoint: {every: int = 0 (only the final one), keep_last: int | null = null (keep all)}
    packing: {mode: flat|trie = flat, max_tokens: int | null}   (sft only; trie: batch_size counts conversations,
             max_tokens is the token budget of one packed forward, default seq_len x micro_batch_size)
Model block (spec's `model`): init {preset, vocab_size?, overrides?} | {checkpoint: URI};
tokenizer {path}; dtype auto|bfloat16|float32 (auto = bf16 autocast on GPU; CPU always float32).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import torch

from ..data import SourceSpec, load_stream, make_packer
from ..errors import BadInput
from ..runtime import Extra, open_stage, run_loop
from ..train import ConfigError, TrainConfig, train_step, train_step_trie

if TYPE_CHECKING:
    from ..job import JobContext

# ------------------------------------------------------------------------------------------------ config


def data_config(stage: dict) -> tuple[list[SourceSpec], int]:
    data = stage.get("data")
    if not isinstance(data, dict) or not isinstance(data.get("sources"), list) or not data["sources"]:
        raise ConfigError("stage.data.sources: required, a non-empty list of {path, weight, format}")
    sources = [SourceSpec.from_dict(s, f"stage.data.sources[{i}]") for i, s in enumerate(data["sources"])]
    seq_len = data.get("seq_len", 512)
    if not isinstance(seq_len, int) or isinstance(seq_len, bool) or seq_len < 2:
        raise ConfigError(f"stage.data.seq_len: expected an integer >= 2, got {seq_len!r}")
    return sources, seq_len


def checkpoint_config(stage: dict) -> tuple[int, int | None]:
    c = stage.get("checkpoint") or {}
    every, keep = c.get("every", 0), c.get("keep_last")
    if not isinstance(every, int) or every < 0:
        raise ConfigError(f"stage.checkpoint.every: expected an integer >= 0 (0: only the final one), got {every!r}")
    if keep is not None and (not isinstance(keep, int) or keep < 1):
        raise ConfigError(f"stage.checkpoint.keep_last: expected an integer >= 1 or null, got {keep!r}")
    return every, keep


def packing_config(stage: dict, kind: str) -> tuple[str, int | None]:
    p = stage.get("packing") or {}
    mode = p.get("mode", "flat")
    if kind != "sft" and mode != "flat":
        raise ConfigError(f"stage.packing.mode {mode!r}: only sft stages support trie packing")
    max_tokens = p.get("max_tokens")
    if max_tokens is not None and (not isinstance(max_tokens, int) or max_tokens < 1):
        raise ConfigError(f"stage.packing.max_tokens: expected a positive integer or null, got {max_tokens!r}")
    return mode, max_tokens


# ------------------------------------------------------------------------------------------------ the stage


def run_lm_stage(ctx: JobContext, kind: str) -> None:
    d, stage = ctx.dist, ctx.spec.stage
    tcfg = TrainConfig.from_dict(stage.get("train"))
    sources, seq_len = data_config(stage)
    every, keep_last = checkpoint_config(stage)
    mode, max_tokens = packing_config(stage, kind)
    tcfg.check_layout(d.world)
    st = open_stage(ctx, kind, tcfg, every, keep_last, seq_len=seq_len)
    if st is None:
        return
    packer = make_packer(mode, load_stream(sources, ctx.storage, st.tok, kind, tcfg.seed), seq_len, st.tok, max_tokens)
    if st.found is not None:
        packer.load_state_dict(st.state["data"])
    history: list[float] = list(st.state.get("loss_history", []))
    autocast = autocast_dtype(ctx)
    trie_tokens = max_tokens or seq_len * (tcfg.micro_batch_size or tcfg.batch_size // d.world)
    t_start, tokens_seen = time.perf_counter(), 0.0

    def step_fn(step: int) -> dict[str, float]:
        nonlocal tokens_seen
        batch = packer.next_batch(tcfg.batch_size)
        t0 = time.perf_counter()
        if mode == "trie":
            m = train_step_trie(st.model, st.optimizer, batch, step, tcfg, d, autocast, trie_tokens)
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


def autocast_dtype(ctx: JobContext) -> torch.dtype | None:
    """bf16 autocast over fp32 master weights on GPU; CPU runs stay fp32 (exact, and CPU bf16 is slow)."""
    dtype = ctx.spec.model.get("dtype", "auto")
    if dtype not in ("auto", "bfloat16", "bf16", "float32", "fp32"):
        raise BadInput(f"model.dtype: expected auto|bfloat16|bf16|float32|fp32, got {dtype!r}")
    return torch.bfloat16 if ctx.dist.device.type == "cuda" and dtype in ("auto", "bfloat16", "bf16") else None


__all__ = ["run_lm_stage"]
