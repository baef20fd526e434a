"""Trie packing: train trajectory trees that share prefixes once per unique token, with exact losses.

builder (trajectories → depth-first prefix forest) → packer (micro-batches under a token budget, big trees
partitioned with their root path) → attention (tree masks for the model) → losses (per-branch gathers) →
step (the trainer's entry: `packed_forward_backward` / `flat_forward_backward`).
"""

from .builder import Forest, Trajectory, build_forest
from .losses import LossSpec
from .step import flat_forward_backward, forward_backward, packed_forward_backward

__all__ = [
    "Trajectory",
    "Forest",
    "build_forest",
    "LossSpec",
    "packed_forward_backward",
    "flat_forward_backward",
    "forward_backward",
]
