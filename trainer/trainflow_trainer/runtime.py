"""The stage runtime every training stage (midtrain, sft, rft, rl) shares: open, save, loop.

    st = open_stage(ctx, "sft", seq_len=512)       # None: this stage's final checkpoint is already committed
    ...the stage builds its data and restores its cursor from st.state when st.found...
    run_loop(ctx, st, step_fn, extra)              # step_fn(i) trains step i (0-based) and returns its metrics

open_stage  where the weights start: this stage's latest committed checkpoint (resume: model and optimizer
            from its sharded DCP folder at any world size, RNG and trainer_state.json), else the input
            checkpoint's HF weights, else `model.init`; the tokenizer; the model (placed on the job's processes)
            and its optimizer.
save        the one writer of the commit protocol: a staging folder (the destination itself for local output;
            one per rank for S3) with the training state as DCP shards (each rank its own), HF weights for
            serving + tokenizer, RNG, trainer_state.json and the stage's extra files, then COMMIT.json over every
            rank's files, retention, the status update and a barrier so every rank leaves together.
run_loop    the step loop: preemption (SIGTERM, all ranks agreeing through ctx.should_stop), status, a commit
            every `checkpoint.every` steps, always at the end, and on a stop request before exiting 75.

A stage's own checkpoint contents (the LM data cursor, the RL ledger cursor and sampler statistics, the RFT
kept set) are an `Extra` returned by a callback at save time: fields merged into trainer_state.json and text
files written beside the weights, so one commit holds everything a resume needs.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from .checkpoint import (
    COMMIT_FILE,
    CheckpointError,
    Found,
    apply_retention,
    fetch_verified,
    latest_verified,
    step_dir,
    upload_files,
    write_commit,
)
from .contract import TrainConfig
from .contract.models import CheckpointInit, PresetInit
from .errors import BadInput, Preempted
from .model import DEFAULT_MAX_SHARD_BYTES, ModelConfig, Transformer, load_config, load_state_dict, preset, save_hf
from .storage import is_s3, join
from .tokenizer import TOKENIZER_FILE, Tokenizer
from .tracking import Tracker
from .train import (
    Dist,
    FsdpOptions,
    build_optimizer,
    full_model_state,
    parallelize,
    rng_state,
    seed_everything,
    set_deterministic,
    set_rng_state,
)
from .train_state import TRAIN_STATE_DIR, load_train_state, save_train_state

if TYPE_CHECKING:
    from .job import JobContext

STATE_FILE = "trainer_state.json"
RNG_FILE = "rng.pt"
# The largest safetensors file of a checkpoint's HF weights (a constant, not a config key: serving engines read
# any shard size; 2 GiB keeps each file well under S3's single-PUT limit and a loader's memory peak small).
# Above it the weights are split into model-0000i-of-0000n.safetensors with model.safetensors.index.json.
HF_MAX_SHARD_BYTES = DEFAULT_MAX_SHARD_BYTES


@dataclass
class Extra:
    """A stage's own part of a checkpoint: fields of trainer_state.json and text files (name → content)."""

    state: dict[str, Any] = field(default_factory=dict)
    files: dict[str, str] = field(default_factory=dict)


@dataclass
class StageState:
    """Everything a stage's loop trains and checkpoints; `step` counts the optimizer steps taken."""

    kind: str
    tcfg: TrainConfig
    every: int  # commit every N steps (and always at the end)
    keep_last: int  # non-final checkpoints kept
    model: nn.Module
    cfg: ModelConfig
    tok: Tokenizer
    optimizer: torch.optim.Optimizer
    found: Found | None  # the checkpoint this attempt resumed from
    state: dict[str, Any]  # its trainer_state.json; {} when the stage starts fresh
    step: int = 0
    metrics: dict[str, float] = field(default_factory=dict)

    def resumed_file(self, name: str) -> Path | None:
        """A file of the resumed checkpoint (an Extra file saved earlier), if there is one."""
        p = self.found.local_dir / name if self.found else None
        return p if p is not None and p.is_file() else None


# ------------------------------------------------------------------------------------------------ inputs


def open_checkpoint(ctx: JobContext, uri: str, what: str) -> Path:
    """A local folder for an input checkpoint: verified when committed; a plain HF folder is accepted locally."""
    cache = Path(ctx.spec.work_dir) / "inputs"
    try:  # a stage starts from the weights: the input's training state (optimizer, 2x their size) stays behind
        local, _ = fetch_verified(uri, ctx.storage, cache, want=lambda p: not p.startswith(f"{TRAIN_STATE_DIR}/"))
        return local
    except CheckpointError as e:
        if not is_s3(uri) and (Path(uri) / "config.json").is_file() and not (Path(uri) / STATE_FILE).exists():
            ctx.log(f"trainflow: {what} {uri} has no COMMIT.json; using it as a plain HF model folder")
            return Path(uri)
        raise BadInput(f"{what} {uri}: {e}") from None


def resolve_tokenizer(ctx: JobContext, checkpoint_dirs: list[Path]) -> Tokenizer:
    """model.tokenizer.path when set (a file or folder, local or s3://), else the first checkpoint's own."""
    block = ctx.spec.model.tokenizer
    path = block.path if block is not None else None
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


def model_config_from_init(ctx: JobContext, tok: Tokenizer) -> ModelConfig:
    """A preset's config with the init block's overrides; the vocabulary is the tokenizer's unless overridden."""
    init = ctx.spec.model.init
    if not isinstance(init, PresetInit):  # from_pipeline is resolved by the workflow into input_checkpoint
        raise BadInput(f"model.init {init.model_dump()}: no input checkpoint arrived for it (nothing to start from)")
    overrides: dict[str, Any] = {"vocab_size": tok.vocab_size, **init.overrides}
    try:
        return preset(init.preset, **overrides)
    except (KeyError, ValueError, TypeError) as e:
        raise BadInput(f"model.init: {e.args[0] if e.args else e}") from None


def find_resume(ctx: JobContext) -> tuple[Found | None, dict[str, Any]]:
    """This stage's newest committed checkpoint that verifies, and its trainer_state.json."""
    spec = ctx.spec
    if not spec.resume:
        return None, {}
    # each rank its own copy: ranks on one host share work_dir, and every rank may need every shard (resharding)
    cache = Path(spec.work_dir) / "resume" / (f"rank-{ctx.dist.rank}" if ctx.dist.distributed else "")
    found = latest_verified(spec.output_prefix, ctx.storage, cache, log=ctx.log)
    if found is None:
        return None, {}
    return found, json.loads((found.local_dir / STATE_FILE).read_text())


def committed_result(ctx: JobContext, result_file: str) -> tuple[str, dict[str, Any]] | None:
    """For stages whose output is a result, not a model (eval, curate): on a retry, this stage's final commit
    and the result it holds (URI, parsed `result_file`), so the stage reports it again instead of redoing it."""
    spec = ctx.spec
    if not spec.resume:
        return None
    found = latest_verified(spec.output_prefix, ctx.storage, Path(spec.work_dir) / "resume", log=ctx.log)
    if found is None or not found.manifest.get("final") or not (found.local_dir / result_file).is_file():
        return None
    return found.uri, json.loads((found.local_dir / result_file).read_text())


def build_model(
    ctx: JobContext, found: Found | None, seq_len: int | None
) -> tuple[Transformer, ModelConfig, Tokenizer]:
    """Tokenizer, model config and model; a fresh stage's model holds its starting weights (the resumed ones
    are loaded later, with the optimizer). The global RNG is seeded from train.seed before the init draws."""
    spec = ctx.spec
    input_dir = open_checkpoint(ctx, spec.input_checkpoint, "input_checkpoint") if spec.input_checkpoint else None
    init, init_dir = spec.model.init, None
    if input_dir is None and found is None and isinstance(init, CheckpointInit):
        init_dir = open_checkpoint(ctx, init.checkpoint, "model.init.checkpoint")
    weights_dir = found.local_dir if found else (input_dir or init_dir)
    tok = resolve_tokenizer(ctx, [p for p in (weights_dir if found else None, input_dir, init_dir) if p])
    try:
        cfg = load_config(weights_dir) if weights_dir else model_config_from_init(ctx, tok)
    except ValueError as e:
        raise BadInput(f"{weights_dir}/config.json: {e}") from None
    if tok.vocab_size > cfg.vocab_size:
        raise BadInput(f"tokenizer has {tok.vocab_size} tokens but the model's vocab_size is {cfg.vocab_size}")
    if seq_len is not None and seq_len > cfg.max_position_embeddings:
        raise BadInput(
            f"stage.data.seq_len {seq_len} exceeds the model's max_position_embeddings {cfg.max_position_embeddings}"
        )
    model = Transformer(cfg)
    if weights_dir is not None and found is None:
        missing, unexpected = model.load_state_dict(load_state_dict(weights_dir), strict=False)
        missing = [k for k in missing if not (cfg.tie_word_embeddings and k == "lm_head.weight")]
        if missing or unexpected:
            raise BadInput(
                f"{weights_dir}: weights do not match config.json (missing {missing[:3]}, unexpected {unexpected[:3]})"
            )
    return model, cfg, tok


# ------------------------------------------------------------------------------------------------ open


def open_stage(ctx: JobContext, *, seq_len: int | None = None, parallel: bool = True) -> StageState | None:
    """The stage's state, resumed from its latest committed checkpoint when there is one; None when that
    checkpoint is already the stage's final one (nothing to do). seq_len: the longest sequence trained, checked
    against the model's positions. parallel: place the model on the job's processes (FSDP2 over its ranks, CPU or
    GPU); False keeps one CPU copy (the rollout stages)."""
    d, stage = ctx.dist, ctx.spec.stage
    tcfg = stage.train
    assert tcfg is not None, "the schema requires a train block of every kind that trains (all but eval)"
    ctx.status.update(total_steps=tcfg.steps)
    set_deterministic(d.device if parallel else torch.device("cpu"))
    found, state = find_resume(ctx)
    if found is not None:
        ctx.status.update(last_checkpoint=found.uri, last_checkpoint_step=found.step)
        if found.manifest.get("final") and state["step"] >= tcfg.steps:
            ctx.log(f"trainflow: {found.uri} is this stage's final checkpoint: nothing to do")
            ctx.status.update(step=state["step"], metrics=state.get("metrics", {}))
            return None
        ctx.log(f"trainflow: resuming from {found.uri} (step {state['step']})")
        ctx.status.update(resumed_from={"uri": found.uri, "step": found.step})

    seed_everything(tcfg.seed)
    transformer, cfg, tok = build_model(ctx, found, seq_len)
    model: nn.Module = parallelize(transformer, d, FsdpOptions.of(tcfg)) if parallel else transformer
    optimizer = build_optimizer(model, tcfg)
    st = StageState(
        stage.kind, tcfg, stage.checkpoint.every, stage.checkpoint.keep_last, model, cfg, tok, optimizer, found, state
    )
    if found is not None:
        train_state = found.local_dir / TRAIN_STATE_DIR
        if not train_state.is_dir():
            raise BadInput(
                f"{found.uri} holds no {TRAIN_STATE_DIR}/ (a checkpoint of an older trainflow, optimizer.pt): it cannot"
                " be resumed; start the stage again (resume --from STAGE) or move the folder away"
            )
        load_train_state(model, optimizer, train_state, d.distributed)
        set_rng_state(torch.load(found.local_dir / RNG_FILE, weights_only=False))
        st.step, st.metrics = int(state["step"]), dict(state.get("metrics", {}))
    return st


# ------------------------------------------------------------------------------------------------ save


def save(ctx: JobContext, st: StageState, final: bool, extra: Extra) -> str:
    """Commits step st.step: every file staged, then COMMIT.json, then retention. Call it on every rank: the
    training state is written as DCP shards by every rank (train_state.py), the HF weights (gathered
    collectively under FSDP), tokenizer, RNG, trainer_state.json and extra files by rank 0, and COMMIT.json,
    over every rank's files, by rank 0 last. Returns the checkpoint's URI."""
    spec, d = ctx.spec, ctx.dist
    uri = join(spec.output_prefix, step_dir(st.step))
    local = staging_dir(ctx, st.step)
    if d.is_main or is_s3(uri):  # one shared destination folder (local output), or each rank's own staging
        (local / COMMIT_FILE).unlink(missing_ok=True)  # an older commit of this step no longer holds
        shutil.rmtree(local, ignore_errors=True)
        local.mkdir(parents=True)
    _barrier(d)
    msd = full_model_state(st.model)
    save_train_state(st.model, st.optimizer, local / TRAIN_STATE_DIR, d.distributed, durable=not is_s3(uri))
    if d.is_main:
        save_hf(msd, st.cfg, local, HF_MAX_SHARD_BYTES)
        st.tok.save(local)
        torch.save(rng_state(), local / RNG_FILE)
        (local / STATE_FILE).write_text(json.dumps(trainer_state(ctx, st, extra)) + "\n")
        for name, text in extra.files.items():
            (local / name).write_text(text)
    _barrier(d)  # every rank's files are on disk
    entries = publish_files(ctx, local, uri)
    if d.is_main:
        write_commit(uri, st.step, final, entries, ctx.storage)
        apply_retention(spec.output_prefix, ctx.storage, st.keep_last, log=ctx.log)
        ctx.status.update(last_checkpoint=uri, last_checkpoint_step=st.step, write=True)
    if is_s3(uri):
        shutil.rmtree(local, ignore_errors=True)
    _barrier(d)
    return uri


def staging_dir(ctx: JobContext, step: int) -> Path:
    """Where this rank writes step's files: the destination itself for local output (a folder every rank sees),
    else its own folder under work_dir (ranks on other nodes have other disks; on one node they must not meet)."""
    uri = join(ctx.spec.output_prefix, step_dir(step))
    if not is_s3(uri):
        return Path(uri)
    return Path(ctx.spec.work_dir) / "staging" / f"rank-{ctx.dist.rank}" / step_dir(step)


def publish_files(ctx: JobContext, local: Path, uri: str) -> list[dict]:
    """COMMIT.json's entries of every rank's files (on rank 0; [] elsewhere). S3: each rank hashes and uploads
    the files it staged and rank 0 gathers the entries; local output: every file is already in place and
    rank 0 hashes the folder."""
    d = ctx.dist
    if not is_s3(uri):
        return upload_files(local, uri, ctx.storage) if d.is_main else []
    mine = upload_files(local, uri, ctx.storage)
    if not d.distributed:
        return mine
    gathered: list[list[dict]] | None = [[] for _ in range(d.world)] if d.is_main else None
    torch.distributed.gather_object(mine, gathered, dst=0)
    return [e for rank_entries in gathered or [] for e in rank_entries]


def _barrier(d: Dist) -> None:
    if d.distributed:
        torch.distributed.barrier()


def trainer_state(ctx: JobContext, st: StageState, extra: Extra) -> dict[str, Any]:
    """trainer_state.json: what every stage records, then the stage's own fields."""
    t = st.tcfg
    return {
        "step": st.step,
        "total_steps": t.steps,
        "stage": ctx.spec.stage.name,
        "kind": st.kind,
        "scheduler": {"lr": st.metrics.get("lr"), "warmup_steps": t.warmup_steps, "min_lr": t.min_lr},
        "metrics": st.metrics,
        "world_size": ctx.dist.world,
        **extra.state,
    }


# ------------------------------------------------------------------------------------------------ the loop


def run_loop(
    ctx: JobContext,
    st: StageState,
    step_fn: Callable[[int], dict[str, float]],
    extra: Callable[[], Extra],
    after_step: Callable[[bool], None] | None = None,
) -> None:
    """Trains from st.step to train.steps. step_fn(i) takes optimizer step i (0-based) and returns its metrics;
    extra() is the stage's part of a checkpoint; after_step(final) runs once a step is committed (or not due),
    e.g. to publish the new weights to the inference servers. Raises Preempted on a stop request, after
    committing the step just taken."""
    total = st.tcfg.steps
    # metrics where users look (tracking.py): continued, not restarted, by a resumed attempt
    tracker = Tracker(ctx.spec, ctx.storage, resumed_step=st.step if st.found else None, enabled=ctx.dist.is_main)
    try:
        while st.step < total:
            if ctx.should_stop():  # before a step, e.g. SIGTERM during set-up: nothing new to save
                raise Preempted()
            st.metrics = step_fn(st.step)
            st.step += 1
            ctx.status.update(step=st.step, metrics=st.metrics, write=(st.step == 1))  # the first step shows at once
            tracker.log(st.step, {**st.metrics, "attempt": float(ctx.spec.attempt)})
            final = st.step == total
            stop = ctx.should_stop()
            if final or st.step % st.every == 0 or stop:
                tracker.sync()  # before the commit: a crash in between leaves steps a resume purges, never a gap
                save(ctx, st, final, extra())
            if stop and not final:
                raise Preempted()
            if after_step is not None:
                after_step(final)
    finally:
        tracker.close()
    ctx.status.update(step=st.step, metrics=st.metrics)


__all__ = [
    "Extra",
    "StageState",
    "open_stage",
    "save",
    "run_loop",
    "open_checkpoint",
    "resolve_tokenizer",
    "STATE_FILE",
    "RNG_FILE",
]
