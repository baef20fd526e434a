"""The policy a rollout stage (rft, rl) trains: opened by the stage runtime (runtime.py) on the job's ranks
(FSDP2 on GPUs, replicas on CPU ranks: rl/ranks.py), the weights it hands to the inference server after each
step, and the sampler statistics its checkpoints carry beside the trainer state (one commit: weights,
optimizer, RNG, ledger cursor, sampler statistics).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..model import save_hf
from ..runtime import StageState, open_stage
from ..train import full_model_state

if TYPE_CHECKING:
    from ..job import JobContext

SAMPLER_FILE = "sampler_stats.json"


def open_policy(ctx: JobContext) -> StageState | None:
    """The policy of a rollout stage, placed on the job's ranks, resumed from the stage's latest committed
    checkpoint; None when that checkpoint is already the stage's final one."""
    return open_stage(ctx)


def sampler_files(sampler_stats: Any) -> dict[str, str]:
    """The sampler's statistics as a checkpoint file (none before the data plane sent any)."""
    return {} if sampler_stats is None else {SAMPLER_FILE: json.dumps(sampler_stats) + "\n"}


def write_weights(st: StageState, folder: Path, main: bool = True) -> Path:
    """A servable HF folder (config, weights, tokenizer) for the inference server's reload. Call it on every
    rank (the full weights are gathered collectively under FSDP); only the main rank (`main`) writes."""
    msd = full_model_state(st.model)
    if main:
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        save_hf(msd, st.cfg, folder)
        st.tok.save(folder)
    return folder
