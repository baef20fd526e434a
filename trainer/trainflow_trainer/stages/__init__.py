"""Stage entry points by `stage.kind`. Each is `run(ctx: JobContext) -> None`; it returns when the stage is
done (final checkpoint committed) and raises BadInput/Preempted/... otherwise (job.py maps them to exit
codes). To add a stage (rft, rl), write stages/<kind>.py with a `run` and register it here."""

from __future__ import annotations

import importlib
from collections.abc import Callable

STAGES: dict[str, str] = {
    "midtrain": "trainflow_trainer.stages.midtrain",
    "sft": "trainflow_trainer.stages.sft",
    "rft": "trainflow_trainer.stages.rft",
    "rl": "trainflow_trainer.stages.rl",
    "eval": "trainflow_trainer.stages.eval",
    "curate": "trainflow_trainer.stages.curate",
}


def get_stage(kind: str) -> Callable:
    if kind not in STAGES:
        raise KeyError(f"stage.kind {kind!r} is not known to this trainer (known: {', '.join(sorted(STAGES))})")
    return importlib.import_module(STAGES[kind]).run


def register_stage(kind: str, module: str) -> None:
    STAGES[kind] = module
