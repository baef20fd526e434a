"""Supervised fine-tuning: multi-turn conversations with tool calls, rendered by the chat template; loss on
the assistant's tokens only. `stage.packing.mode` chooses flat packing (default) or trie packing."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .lm import run_lm_stage

if TYPE_CHECKING:
    from ..job import JobContext


def run(ctx: JobContext) -> None:
    run_lm_stage(ctx, "sft")
