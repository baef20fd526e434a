"""Mid-training: causal LM on documents packed to seq_len, no attention across documents.
The two mid-train phases of a pipeline are two stages of this kind with different data mixes."""

from __future__ import annotations

from .lm import run_lm_stage


def run(ctx) -> None:
    run_lm_stage(ctx, "midtrain")
