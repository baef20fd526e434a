"""The policy a rollout stage (rft, rl) trains: opened by the stage runtime (runtime.py) on one CPU copy, the
weights it hands to the inference server after each step, and the sampler statistics its checkpoints carry
beside the trainer state (one commit: weights, optimizer, RNG, ledger cursor, sampler statistics).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import BadInput
from ..model import save_hf
from ..runtime import StageState, open_stage
from ..stages.lm import checkpoint_config
from ..train import TrainConfig, full_model_state

if TYPE_CHECKING:
    from ..job import JobContext

SAMPLER_FILE = "sampler_stats.json"


def open_policy(ctx: JobContext, kind: str) -> StageState | None:
    """The start every rollout stage shares: its train config, checkpoint cadence and policy, resumed from the
    latest committed checkpoint. None when that checkpoint is already the stage's final one."""
    stage = ctx.spec.stage
    try:
        tcfg = TrainConfig.from_dict(stage.get("train"))
    except ValueError as e:
        raise BadInput(str(e)) from None
    every, keep_last = checkpoint_config(stage)
    return open_stage(ctx, kind, tcfg, every, keep_last, parallel=False)


def sampler_files(sampler_stats: Any) -> dict[str, str]:
    """The sampler's statistics as a checkpoint file (none before the data plane sent any)."""
    return {} if sampler_stats is None else {SAMPLER_FILE: json.dumps(sampler_stats) + "\n"}


def write_weights(st: StageState, folder: Path) -> Path:
    """A servable HF folder (config, weights, tokenizer) for the inference server's reload."""
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    save_hf(full_model_state(st.model), st.cfg, folder)
    st.tok.save(folder)
    return folder
