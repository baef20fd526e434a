"""The training loop's parts, with all state explicit: the train block (the contract's TrainConfig), LR
schedule, distributed set-up, optimizer, one optimizer step, and the (full, unsharded) state of a checkpoint.

Data parallelism: every rank builds the same global batch from the same data cursor and takes its own
contiguous slice of rows, then micro-batches. Each micro-batch's summed token loss is divided by the
*global* number of target tokens, so the gradients summed over micro-batches and ranks are exactly those of
the mean loss over the global batch — one process or many, any micro-batch size. On GPUs the model is sharded
with FSDP2 (`fully_shard`, which averages gradients over ranks, undone by scaling the loss by the world
size); on CPU (gloo) the ranks keep full replicas and sum their gradients with one all-reduce per step
(what DDP does, written out, so the arithmetic is visible and gradient accumulation needs no no_sync).
"""

from __future__ import annotations

import math
import os
import random
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from .contract import TrainConfig
from .errors import BadInput
from .model import Transformer


def micro_batch_size(cfg: TrainConfig, world: int) -> int:
    """Sequences per forward/backward on one rank, after checking the global batch splits evenly over the
    job's ranks (a run-time fact: the schema cannot know how many processes a launcher starts)."""
    if cfg.batch_size % world:
        raise BadInput(f"stage.train.batch_size {cfg.batch_size} is not divisible by the {world} ranks")
    per_rank = cfg.batch_size // world
    assert cfg.micro_batch_size is not None, "midtrain/sft: the resolver sets train.micro_batch_size"
    micro = min(cfg.micro_batch_size, per_rank)
    if per_rank % micro:
        raise BadInput(f"stage.train.micro_batch_size {micro} does not divide the per-rank batch {per_rank}")
    return micro


def lr_at(step: int, cfg: TrainConfig) -> float:
    """Linear warm-up over warmup_steps, then cosine from lr to min_lr at the last step (step is 0-based)."""
    min_lr = cfg.min_lr
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    span = max(1, cfg.steps - cfg.warmup_steps - 1)
    progress = min(1.0, (step - cfg.warmup_steps) / span)
    return min_lr + 0.5 * (cfg.lr - min_lr) * (1 + math.cos(math.pi * progress))


# ------------------------------------------------------------------------------------------------ processes


@dataclass
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    fsdp: bool = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world > 1


def init_distributed() -> Dist:
    """From torchrun's environment; one CPU/GPU process when it is absent."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank, local_rank = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    cuda = torch.cuda.is_available() and os.environ.get("TRAINFLOW_DEVICE", "") != "cpu"
    device = torch.device("cuda", local_rank) if cuda else torch.device("cpu")
    if cuda:
        torch.cuda.set_device(device)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if cuda else "gloo")
    return Dist(rank, world, local_rank, device, fsdp=world > 1)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def set_deterministic(device: torch.device) -> None:
    """Bitwise reproducibility. The CPU kernels we use are deterministic for a fixed thread count already
    (the exact-resume test proves it); torch.use_deterministic_algorithms is only switched on for CUDA,
    where it matters, because merely calling it imports torch._inductor (seconds of job start-up)."""
    if device.type == "cuda":
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)


# ------------------------------------------------------------------------------------------------ model/optim


def parallelize(model: Transformer, d: Dist) -> nn.Module:
    """FSDP2 on multi-GPU (each block its own shard group, then the root); CPU ranks keep full replicas."""
    model.to(d.device)
    if d.fsdp:
        from torch.distributed.fsdp import fully_shard

        for block in model.model.layers:
            fully_shard(block)
        fully_shard(model)
    elif d.distributed:
        for p in model.parameters():  # replicas start equal even if a caller seeded differently
            dist.broadcast(p.data, src=0)
    return model


def build_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.AdamW:
    """AdamW; matrices decay, biases/norm scales/... do not. Tied weights are counted once."""
    decay: list[nn.Parameter] = []
    no_decay: list[nn.Parameter] = []
    for _, p in model.named_parameters():  # named_parameters de-duplicates tied parameters
        (decay if p.dim() >= 2 else no_decay).append(p)
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=cfg.betas, foreach=False)


# The gathered (unsharded) weights under HF names: what serving, the next stage and the RL weight publisher read.
# The training state a resume needs (model + optimizer, sharded) is a DCP folder: train_state.py.


def full_model_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """Unsharded fp32 weights under HF names, on CPU (a collective under FSDP: call it on every rank; rank 0
    receives them)."""
    if _is_fsdp(model):
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        full = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
        out: dict[str, torch.Tensor] = {}
        for k, v in full.items():  # typed as any state value; a model's full state dict holds only tensors
            assert isinstance(v, torch.Tensor), f"model state {k}: {type(v).__name__}, not a tensor"
            out[k] = v
        return out
    return {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}


def _is_fsdp(model: nn.Module) -> bool:
    return type(model).__name__.startswith("FSDP")


def rng_state() -> dict:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# ------------------------------------------------------------------------------------------------ one step


def optimizer_step(model: nn.Module, optimizer: torch.optim.Optimizer, lr: float, grad_clip: float) -> float:
    """The end of every stage's step, once the gradients are in `.grad` (summed over micro-batches and ranks):
    set the LR, clip the global grad norm (grad_clip 0: measure only), step, zero. Returns the norm before
    clipping. A parameter whose `.grad` is None is skipped by AdamW (no decay, no moment update)."""
    for g in optimizer.param_groups:
        g["lr"] = lr
    grad_norm = float(torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip if grad_clip > 0 else float("inf")))
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return grad_norm


def train_step(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    batch: Any,
    step: int,
    cfg: TrainConfig,
    d: Dist,
    autocast_dtype: torch.dtype | None,
) -> dict[str, float]:
    """One optimizer step on a global batch (every rank passes the same one). Returns global metrics."""
    lr = lr_at(step, cfg)
    micro = micro_batch_size(cfg, d.world)
    per_rank = cfg.batch_size // d.world
    if batch.num_rows != cfg.batch_size:
        raise ValueError(f"batch has {batch.num_rows} rows, expected batch_size {cfg.batch_size}")
    global_targets = batch.num_targets()
    denom = max(1, global_targets)
    scale = d.world if d.fsdp else 1  # FSDP averages gradients over ranks; we want the sum
    local = batch.select(slice(d.rank * per_rank, (d.rank + 1) * per_rank))
    n_micro = per_rank // micro
    loss_sum = torch.zeros((), dtype=torch.float64)
    for m in range(n_micro):
        mb = local.select(slice(m * micro, (m + 1) * micro)).to(d.device)
        if d.fsdp:
            model.set_requires_gradient_sync(m == n_micro - 1)  # type: ignore[operator]
        with torch.autocast(d.device.type, dtype=autocast_dtype or torch.float32, enabled=autocast_dtype is not None):
            logits = model(mb.input_ids, mb.position_ids, mb.attention())
        ls = mb.loss_sum(logits)
        (ls * (scale / denom)).backward()
        loss_sum += ls.detach().double().cpu()
    if d.distributed and not d.fsdp:
        for p in model.parameters():
            if p.grad is None:
                p.grad = torch.zeros_like(p)
            dist.all_reduce(p.grad, op=dist.ReduceOp.SUM)
    grad_norm = optimizer_step(model, optimizer, lr, cfg.grad_clip)
    if d.distributed:
        t = loss_sum.to(d.device) if d.fsdp else loss_sum
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
        loss_sum = t.cpu()
    return {
        "loss": float(loss_sum) / denom,
        "lr": lr,
        "grad_norm": grad_norm,
        "target_tokens": float(global_targets),
        "tokens": float(batch.num_tokens()),
    }


def train_step_trie(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    batch: Any,
    step: int,
    cfg: TrainConfig,
    d: Dist,
    autocast_dtype: torch.dtype | None,
    max_tokens: int,
) -> dict[str, float]:
    """One SFT optimizer step with trie packing: this rank's conversations become a prefix forest (trie/),
    shared prefixes are computed once, and the loss is the same token-mean cross-entropy over the global
    batch's assistant tokens as the flat step's. Not for FSDP (the trie step calls the layers directly)."""
    from .trie import LossSpec, Trajectory, packed_forward_backward

    if d.fsdp:
        raise BadInput("stage.packing.mode trie is not supported with FSDP yet; use packing.mode: flat")
    lr = lr_at(step, cfg)
    if batch.num_rows != cfg.batch_size or cfg.batch_size % d.world:
        raise ValueError(
            f"batch has {batch.num_rows} examples, expected batch_size {cfg.batch_size} divisible by {d.world}"
        )
    per_rank = cfg.batch_size // d.world
    local = batch.examples[d.rank * per_rank : (d.rank + 1) * per_rank]
    global_targets = batch.num_targets()
    local_targets = sum(sum(e.targets[1:]) for e in local)
    trajectories = [Trajectory(tokens=e.ids, loss_mask=[0.0] + [float(t) for t in e.targets[1:]]) for e in local]
    metrics: dict[str, float] = {}
    if local_targets > 0:
        with torch.autocast(d.device.type, dtype=autocast_dtype or torch.float32, enabled=autocast_dtype is not None):
            metrics = packed_forward_backward(model, trajectories, LossSpec.from_config("sft"), max_tokens)
        # trie/ normalises by this rank's target count; rescale to the global token mean.
        scale = local_targets / max(1, global_targets)
        for p in model.parameters():
            if p.grad is not None:
                p.grad.mul_(scale)
    for p in model.parameters():
        if p.grad is None:
            p.grad = torch.zeros_like(p)
        if d.distributed:
            dist.all_reduce(p.grad, op=dist.ReduceOp.SUM)
    grad_norm = optimizer_step(model, optimizer, lr, cfg.grad_clip)
    loss_sum = torch.tensor([metrics.get("loss", 0.0) * local_targets], dtype=torch.float64)
    if d.distributed:
        dist.all_reduce(loss_sum, op=dist.ReduceOp.SUM)
    return {
        "loss": float(loss_sum) / max(1, global_targets),
        "lr": lr,
        "grad_norm": grad_norm,
        "target_tokens": float(global_targets),
        "tokens": float(batch.num_tokens()),
        "unique_tokens": metrics.get("unique_tokens", 0.0),
        "packed_tokens": metrics.get("packed_tokens", 0.0),
    }
