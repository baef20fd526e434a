"""Mid-training: causal LM on documents packed to seq_len, no attention across documents.
The two mid-train phases of a pipeline are two stages of this kind with different data mixes."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .lm import run_lm_stage

if TYPE_CHECKING:
    from ..job import JobContext


def run(ctx: JobContext) -> None:
    run_lm_stage(ctx, "midtrain")
