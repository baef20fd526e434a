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

import json
import shutil
import time
from pathlib import Path
from typing import Any

import torch

from ..checkpoint import CheckpointError, Found, apply_retention, commit, fetch_verified, latest_verified, step_dir
from ..data import SourceSpec, load_stream, make_packer
from ..errors import BadInput, Preempted
from ..model import ModelConfig, Transformer, load_config, load_state_dict, preset, save_hf
from ..storage import is_s3, join
from ..tokenizer import TOKENIZER_FILE, Tokenizer
from ..train import (
    ConfigError,
    TrainConfig,
    build_optimizer,
    full_model_state,
    full_optimizer_state,
    load_full_state,
    parallelize,
    rng_state,
    seed_everything,
    set_deterministic,
    set_rng_state,
    train_step,
    train_step_trie,
)

STATE_FILE = "trainer_state.json"
OPTIMIZER_FILE = "optimizer.pt"
RNG_FILE = "rng.pt"


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


# ------------------------------------------------------------------------------------------------ inputs


def open_checkpoint(ctx, uri: str, what: str) -> Path:
    """A local folder for an input checkpoint: verified when committed; a plain HF folder is accepted locally."""
    cache = Path(ctx.spec.work_dir) / "inputs"
    try:
        local, _ = fetch_verified(uri, ctx.storage, cache)
        return local
    except CheckpointError as e:
        if not is_s3(uri) and (Path(uri) / "config.json").is_file() and not (Path(uri) / STATE_FILE).exists():
            ctx.log(f"trainflow: {what} {uri} has no COMMIT.json; using it as a plain HF model folder")
            return Path(uri)
        raise BadInput(f"{what} {uri}: {e}") from None


def resolve_tokenizer(ctx, checkpoint_dirs: list[Path]) -> Tokenizer:
    tcfg = ctx.spec.model.get("tokenizer") or {}
    path = tcfg.get("path") if isinstance(tcfg, dict) else None
    if path:
        if is_s3(path):
            local = Path(ctx.spec.work_dir) / "inputs" / "tokenizer" / TOKENIZER_FILE
            src = path if path.endswith(".json") else join(path, TOKENIZER_FILE)
            try:
                ctx.storage.download_file(src, local)
            except Exception as e:  # noqa: BLE001
                raise BadInput(f"model.tokenizer.path {src}: cannot download ({e})") from None
            path = str(local)
        try:
            return Tokenizer.load(path)
        except (FileNotFoundError, ValueError) as e:
            raise BadInput(f"model.tokenizer.path: {e}") from None
    for d in checkpoint_dirs:
        if (d / TOKENIZER_FILE).is_file():
            return Tokenizer.load(d)
    raise BadInput("no tokenizer: set model.tokenizer.path, or start from a checkpoint that holds tokenizer.json")


def model_config_from_init(ctx, tok: Tokenizer) -> ModelConfig:
    init = ctx.spec.model.get("init")
    if not isinstance(init, dict) or "preset" not in init:
        raise BadInput("model.init: expected {preset: NAME, vocab_size?, overrides?} or {checkpoint: URI}")
    overrides = dict(init.get("overrides") or {})
    if "vocab_size" in init:
        overrides["vocab_size"] = init["vocab_size"]
    overrides.setdefault("vocab_size", tok.vocab_size)
    try:
        return preset(init["preset"], **overrides)
    except (KeyError, ValueError, TypeError) as e:
        raise BadInput(f"model.init: {e.args[0] if e.args else e}") from None


# ------------------------------------------------------------------------------------------------ the stage


def run_lm_stage(ctx, kind: str) -> None:
    spec, d = ctx.spec, ctx.dist
    stage = spec.stage
    tcfg = TrainConfig.from_dict(stage.get("train"))
    sources, seq_len = data_config(stage)
    every, keep_last = checkpoint_config(stage)
    mode, max_tokens = packing_config(stage, kind)
    tcfg.check_layout(d.world)
    ctx.status.update(total_steps=tcfg.steps)
    set_deterministic(d.device)

    # Where do we start? The latest committed checkpoint of this stage (resume), else the input checkpoint,
    # else model.init.
    found: Found | None = None
    if spec.resume:
        found = latest_verified(spec.output_prefix, ctx.storage, Path(spec.work_dir) / "resume", log=ctx.log)
    state: dict[str, Any] | None = None
    if found is not None:
        state = json.loads((found.local_dir / STATE_FILE).read_text())
        ctx.status.update(last_checkpoint=found.uri, last_checkpoint_step=found.step)
        if found.manifest.get("final") and state["step"] >= tcfg.steps:
            ctx.log(f"trainflow: {found.uri} is this stage's final checkpoint: nothing to do")
            ctx.status.update(step=state["step"], metrics=state.get("metrics", {}))
            return
        ctx.log(f"trainflow: resuming from {found.uri} (step {state['step']})")

    input_dir = open_checkpoint(ctx, spec.input_checkpoint, "input_checkpoint") if spec.input_checkpoint else None
    init = spec.model.get("init") if isinstance(spec.model.get("init"), dict) else {}
    init_ckpt_dir = None
    if input_dir is None and found is None and init.get("checkpoint"):
        init_ckpt_dir = open_checkpoint(ctx, init["checkpoint"], "model.init.checkpoint")
    weights_dir = found.local_dir if found else (input_dir or init_ckpt_dir)
    tok = resolve_tokenizer(ctx, [p for p in (found.local_dir if found else None, input_dir, init_ckpt_dir) if p])

    seed_everything(tcfg.seed)
    try:
        cfg = load_config(weights_dir) if weights_dir else model_config_from_init(ctx, tok)
    except ValueError as e:
        raise BadInput(f"{weights_dir}/config.json: {e}") from None
    if tok.vocab_size > cfg.vocab_size:
        raise BadInput(f"tokenizer has {tok.vocab_size} tokens but the model's vocab_size is {cfg.vocab_size}")
    if seq_len > cfg.max_position_embeddings:
        raise BadInput(
            f"stage.data.seq_len {seq_len} exceeds the model's max_position_embeddings {cfg.max_position_embeddings}"
        )
    model = Transformer(cfg)
    if weights_dir is not None and found is None:
        sd = load_state_dict(weights_dir)
        missing, unexpected = model.load_state_dict(sd, strict=False)
        missing = [k for k in missing if not (cfg.tie_word_embeddings and k == "lm_head.weight")]
        if missing or unexpected:
            raise BadInput(
                f"{weights_dir}: weights do not match config.json (missing {missing[:3]}, unexpected {unexpected[:3]})"
            )

    stream = load_stream(sources, ctx.storage, tok, kind, tcfg.seed)
    packer = make_packer(mode, stream, seq_len, tok, max_tokens)

    model = parallelize(model, d)
    optimizer = build_optimizer(model, tcfg)
    step, history = 0, []
    if found is not None and state is not None:
        optim_sd = torch.load(found.local_dir / OPTIMIZER_FILE, map_location="cpu", weights_only=False)
        load_full_state(model, optimizer, load_state_dict(found.local_dir), optim_sd)
        packer.load_state_dict(state["data"])
        set_rng_state(torch.load(found.local_dir / RNG_FILE, weights_only=False))
        step, history = int(state["step"]), list(state.get("loss_history", []))

    dtype = spec.model.get("dtype", "auto")
    if dtype not in ("auto", "bfloat16", "bf16", "float32", "fp32"):
        raise BadInput(f"model.dtype: expected auto|bfloat16|bf16|float32|fp32, got {dtype!r}")
    # bf16 autocast over fp32 master weights on GPU; CPU runs stay fp32 (exact, and CPU bf16 is slow).
    autocast = torch.bfloat16 if d.device.type == "cuda" and dtype in ("auto", "bfloat16", "bf16") else None

    def save(step: int, final: bool, metrics: dict) -> None:
        msd, osd = full_model_state(model), full_optimizer_state(model, optimizer)
        if d.is_main:
            uri = join(spec.output_prefix, step_dir(step))
            local = Path(uri) if not is_s3(uri) else Path(spec.work_dir) / "staging" / step_dir(step)
            (local / "COMMIT.json").unlink(missing_ok=True)  # an older commit of this step no longer holds
            shutil.rmtree(local, ignore_errors=True)
            local.mkdir(parents=True)
            save_hf(msd, cfg, local)
            tok.save(local)
            torch.save(osd, local / OPTIMIZER_FILE)
            torch.save(rng_state(), local / RNG_FILE)
            trainer_state = {
                "step": step,
                "total_steps": tcfg.steps,
                "stage": stage.get("name"),
                "kind": kind,
                "scheduler": {"lr": metrics.get("lr"), "warmup_steps": tcfg.warmup_steps, "min_lr": tcfg.min_lr},
                "data": packer.state_dict(),
                "metrics": metrics,
                "loss_history": history,
                "world_size": d.world,
            }
            (local / STATE_FILE).write_text(json.dumps(trainer_state) + "\n")
            commit(local, uri, step, final, ctx.storage)
            if is_s3(uri):
                shutil.rmtree(local, ignore_errors=True)
            apply_retention(spec.output_prefix, ctx.storage, keep_last, log=ctx.log)
            ctx.status.update(last_checkpoint=uri, last_checkpoint_step=step, write=True)
        if d.distributed:
            torch.distributed.barrier()

    metrics: dict[str, float] = {}
    t_start, tokens_seen = time.perf_counter(), 0.0
    while step < tcfg.steps:
        if ctx.should_stop():  # before a step, e.g. SIGTERM during set-up: nothing new to save
            raise Preempted()
        batch = packer.next_batch(tcfg.batch_size)
        t0 = time.perf_counter()
        if mode == "trie":
            m = train_step_trie(
                model,
                optimizer,
                batch,
                step,
                tcfg,
                d,
                autocast,
                max_tokens or seq_len * (tcfg.micro_batch_size or tcfg.batch_size // d.world),
            )
        else:
            m = train_step(model, optimizer, batch, step, tcfg, d, autocast)
        dt = time.perf_counter() - t0
        step += 1
        tokens_seen += m["tokens"]
        metrics = {
            **m,
            "tokens_per_s": m["tokens"] / dt if dt > 0 else 0.0,
            "avg_tokens_per_s": tokens_seen / (time.perf_counter() - t_start),
        }
        history.append(m["loss"])
        ctx.status.update(step=step, metrics=metrics, write=(step == 1))  # the first step shows progress at once
        final = step == tcfg.steps
        stop = ctx.should_stop()
        if final or (every and step % every == 0) or stop:
            save(step, final, metrics)
        if stop and not final:
            raise Preempted()
    ctx.status.update(step=step, metrics=metrics)


__all__ = ["run_lm_stage"]
