"""The policy a rollout stage trains: where it starts (this stage's latest committed checkpoint, else the
input checkpoint, else model.init), its optimizer, the weights it hands to the inference server after each
step, and its checkpoints (trainer state + ledger cursor + sampler statistics in one commit).
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..checkpoint import Found, apply_retention, commit, latest_verified, step_dir
from ..errors import BadInput
from ..model import ModelConfig, Transformer, load_config, load_state_dict, save_hf
from ..stages.lm import (
    OPTIMIZER_FILE,
    RNG_FILE,
    STATE_FILE,
    checkpoint_config,
    model_config_from_init,
    open_checkpoint,
    resolve_tokenizer,
)
from ..storage import is_s3, join
from ..tokenizer import Tokenizer
from ..train import (
    TrainConfig,
    build_optimizer,
    full_model_state,
    full_optimizer_state,
    load_full_state,
    rng_state,
    seed_everything,
    set_deterministic,
    set_rng_state,
)

SAMPLER_FILE = "sampler_stats.json"


@dataclass
class Policy:
    model: Transformer
    cfg: ModelConfig
    tok: Tokenizer
    optimizer: torch.optim.Optimizer
    found: Found | None
    state: dict[str, Any] = field(default_factory=dict)  # the resumed trainer_state.json ({} when fresh)

    @property
    def step(self) -> int:
        return int(self.state.get("step", 0))

    @property
    def sampler_file(self) -> Path | None:
        p = self.found.local_dir / SAMPLER_FILE if self.found else None
        return p if p is not None and p.is_file() else None

    def is_finished(self, total_steps: int) -> bool:
        return bool(self.found and self.found.manifest.get("final") and self.step >= total_steps)


def load_policy(ctx, tcfg: TrainConfig) -> Policy:
    spec = ctx.spec
    set_deterministic(torch.device("cpu"))
    found = (
        latest_verified(spec.output_prefix, ctx.storage, Path(spec.work_dir) / "resume", log=ctx.log)
        if spec.resume
        else None
    )
    state = json.loads((found.local_dir / STATE_FILE).read_text()) if found else {}
    input_dir = open_checkpoint(ctx, spec.input_checkpoint, "input_checkpoint") if spec.input_checkpoint else None
    init = spec.model.get("init") if isinstance(spec.model.get("init"), dict) else {}
    init_dir = (
        open_checkpoint(ctx, init["checkpoint"], "model.init.checkpoint")
        if input_dir is None and found is None and init.get("checkpoint")
        else None
    )
    weights_dir = found.local_dir if found else (input_dir or init_dir)
    tok = resolve_tokenizer(ctx, [p for p in (found.local_dir if found else None, input_dir, init_dir) if p])
    seed_everything(tcfg.seed)
    try:
        cfg = load_config(weights_dir) if weights_dir else model_config_from_init(ctx, tok)
    except ValueError as e:
        raise BadInput(f"{weights_dir}/config.json: {e}") from None
    model = Transformer(cfg)
    optimizer = build_optimizer(model, tcfg)
    if found:
        optim_sd = torch.load(found.local_dir / OPTIMIZER_FILE, map_location="cpu", weights_only=False)
        load_full_state(model, optimizer, load_state_dict(found.local_dir), optim_sd)
        set_rng_state(torch.load(found.local_dir / RNG_FILE, weights_only=False))
        ctx.log(f"trainflow: resuming from {found.uri} (step {state['step']}, ledger cursor {state.get('cursor')})")
        ctx.status.update(last_checkpoint=found.uri, last_checkpoint_step=found.step)
    elif weights_dir is not None:
        missing, unexpected = model.load_state_dict(load_state_dict(weights_dir), strict=False)
        missing = [k for k in missing if not (cfg.tie_word_embeddings and k == "lm_head.weight")]
        if missing or unexpected:
            raise BadInput(
                f"{weights_dir}: weights do not match config.json (missing {missing[:3]}, unexpected {unexpected[:3]})"
            )
    return Policy(model, cfg, tok, optimizer, found, state)


def open_stage(ctx) -> tuple[TrainConfig, int, int | None, Policy] | None:
    """The start every rollout stage (rft, rl) shares: its train config, checkpoint cadence and policy, resumed
    from the latest committed checkpoint. None when that checkpoint is already the stage's final one."""
    stage = ctx.spec.stage
    try:
        tcfg = TrainConfig.from_dict(stage.get("train"))
    except ValueError as e:
        raise BadInput(str(e)) from None
    every, keep_last = checkpoint_config(stage)
    ctx.status.update(total_steps=tcfg.steps)
    policy = load_policy(ctx, tcfg)
    if policy.is_finished(tcfg.steps):
        ctx.log(f"trainflow: {policy.found.uri} is this stage's final checkpoint: nothing to do")
        ctx.status.update(step=policy.step, metrics=policy.state.get("metrics", {}))
        return None
    return tcfg, every, keep_last, policy


def write_weights(policy: Policy, folder: Path) -> Path:
    """A servable HF folder (config, weights, tokenizer) for the inference server's reload."""
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    save_hf(full_model_state(policy.model), policy.cfg, folder)
    policy.tok.save(folder)
    return folder


def save_checkpoint(
    ctx,
    policy: Policy,
    step: int,
    final: bool,
    trainer_state: dict,
    sampler_stats: Any,
    keep_last: int | None,
    extra_files: dict[str, str] | None = None,
) -> str:
    """One commit holding weights, optimizer, RNG, trainer state (with the ledger cursor), sampler stats and
    any `extra_files` (name → text) the stage needs to resume exactly."""
    spec = ctx.spec
    uri = join(spec.output_prefix, step_dir(step))
    local = Path(uri) if not is_s3(uri) else Path(spec.work_dir) / "staging" / step_dir(step)
    (local / "COMMIT.json").unlink(missing_ok=True)
    shutil.rmtree(local, ignore_errors=True)
    local.mkdir(parents=True)
    save_hf(full_model_state(policy.model), policy.cfg, local)
    policy.tok.save(local)
    torch.save(full_optimizer_state(policy.model, policy.optimizer), local / OPTIMIZER_FILE)
    torch.save(rng_state(), local / RNG_FILE)
    (local / STATE_FILE).write_text(json.dumps({**trainer_state, "step": step}) + "\n")
    if sampler_stats is not None:
        (local / SAMPLER_FILE).write_text(json.dumps(sampler_stats) + "\n")
    for name, text in (extra_files or {}).items():
        (local / name).write_text(text)
    commit(local, uri, step, final, ctx.storage)
    if is_s3(uri):
        shutil.rmtree(local, ignore_errors=True)
    apply_retention(spec.output_prefix, ctx.storage, keep_last, log=ctx.log)
    ctx.status.update(last_checkpoint=uri, last_checkpoint_step=step, write=True)
    return uri
