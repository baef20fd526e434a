"""The training state a resume needs (model + optimizer) as a sharded `torch.distributed.checkpoint` (DCP) folder.

    train_state/.metadata        written by rank 0: every tensor's global shape and where its chunks lie
    train_state/__<rank>_0.distcp one file per rank: the shards that rank holds (FSDP2: its slice of every
                                  parameter and of the AdamW moments; replicated tensors are written once)

Keys are parameter names (FQNs), the same on one CPU process and under FSDP2 on N ranks, and every tensor is
recorded by its global shape, so DCP reshards on load: a checkpoint written by 2 ranks resumes on 1 and one
written by 1 rank resumes on 2, each rank reading only the chunks its own shards overlap. The folder is one
part of a checkpoint: the commit protocol (checkpoint.py) lists and verifies its files like every other.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from torch import nn

TRAIN_STATE_DIR = "train_state"
DCP_METADATA_FILE = ".metadata"  # DCP's own name for the metadata file


@contextmanager
def _one_process_quiet() -> Iterator[None]:
    """DCP warns on every save/load without a process group, even when asked for one process (no_dist)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="torch.distributed is disabled")
        yield


def _state(model: nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """The model's and the optimizer's state dicts keyed by FQN (sharded DTensors under FSDP2, plain tensors
    otherwise). On an optimizer that has not stepped yet this initialises its state (DCP loads in place)."""
    from torch.distributed.checkpoint.state_dict import get_state_dict

    model_sd, optim_sd = get_state_dict(model, optimizer)
    return {"model": model_sd, "optimizer": optim_sd}


def save_train_state(
    model: nn.Module, optimizer: torch.optim.Optimizer, directory: Path, distributed: bool, durable: bool = True
) -> None:
    """A collective under torch.distributed (call it on every rank with the same directory name): each rank
    writes its own shards into directory, rank 0 the metadata. directory may be a per-rank staging folder
    (files are named by rank; the metadata refers to them by relative name). durable: fsync every file (the
    folder is the checkpoint itself); False for a staging folder that is uploaded and deleted."""
    import torch.distributed.checkpoint as dcp

    directory.mkdir(parents=True, exist_ok=True)
    writer = dcp.FileSystemWriter(directory, single_file_per_rank=True, sync_files=durable, thread_count=1)
    with _one_process_quiet():
        dcp.save(_state(model, optimizer), storage_writer=writer, no_dist=not distributed)


def load_train_state(model: nn.Module, optimizer: torch.optim.Optimizer, directory: Path, distributed: bool) -> None:
    """Restores model and optimizer from a DCP folder written at any world size (a collective when distributed)."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import set_state_dict

    if not (directory / DCP_METADATA_FILE).is_file():
        raise FileNotFoundError(f"{directory}: no {DCP_METADATA_FILE} (not a DCP checkpoint folder)")
    state = _state(model, optimizer)
    with _one_process_quiet():
        dcp.load(state, storage_reader=dcp.FileSystemReader(directory), no_dist=not distributed)
    set_state_dict(model, optimizer, model_state_dict=state["model"], optim_state_dict=state["optimizer"])
    for g in optimizer.param_groups:  # a state-dict round trip turns AdamW's betas tuple into a list
        g["betas"] = tuple(g["betas"])


def read_train_state(directory: Path) -> dict[str, Any]:
    """The whole folder as one unsharded dict on CPU, in a single process ({"model": {fqn: tensor},
    "optimizer": {"state": {fqn: {...}}, "param_groups": [...]}}): for tests and inspection, not for resume."""
    import tempfile

    from torch.distributed.checkpoint.format_utils import dcp_to_torch_save

    with tempfile.TemporaryDirectory(prefix="trainflow-dcp-") as tmp, _one_process_quiet():
        dcp_to_torch_save(directory, Path(tmp) / "state.pt")
        out: dict[str, Any] = torch.load(Path(tmp) / "state.pt", map_location="cpu", weights_only=False)
    return out


__all__ = ["TRAIN_STATE_DIR", "DCP_METADATA_FILE", "save_train_state", "load_train_state", "read_train_state"]
