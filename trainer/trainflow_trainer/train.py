"""The training loop's parts, with all state explicit: the train block (the contract's TrainConfig), LR
schedule, distributed set-up, optimizer, one optimizer step, and the (full, unsharded) state of a checkpoint.

Data parallelism: every rank builds the same global batch from the same data cursor and takes its own
contiguous slice of rows, then micro-batches. Each micro-batch's summed token loss is divided by the
*global* number of target tokens, so the gradients summed over micro-batches and ranks are exactly those of
the mean loss over the global batch — one process or many, any micro-batch size. More than one rank always
means FSDP2, on CPU (gloo) as on GPUs (NCCL): one code path. Every block is its own `fully_shard` unit, then
the root; gradients are summed over ranks (divide factor 1, plain SUM collectives, which gloo supports), not
averaged, so the loss normalisation above is all there is. The train block's `fsdp` options choose bf16
mixed precision (parameters all-gathered in bf16, gradients reduced in fp32), activation checkpointing per
block and CPU offload of the sharded parameters, gradients and optimizer state.
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
from .trie.step import set_gradient_sync


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


def parallelize(model: Transformer, d: Dist, opts: FsdpOptions | None = None) -> nn.Module:
    """FSDP2 over the job's ranks (each block its own shard group, then the root), CPU or GPU; one process
    keeps the plain module. Activation checkpointing applies to one process too."""
    opts = opts or FsdpOptions()
    model.to(d.device)
    if opts.activation_checkpointing:
        from torch.distributed._composable import checkpoint

        for block in model.model.layers:
            checkpoint(block)  # the block's activations are recomputed in backward, not kept
    if not d.fsdp:
        return model
    from torch.distributed.fsdp import CPUOffloadPolicy, FSDPModule, MixedPrecisionPolicy, fully_shard

    for p in model.parameters():  # every rank shards the same weights even if a caller seeded differently
        dist.broadcast(p.data, src=0)
    kwargs: dict[str, Any] = {}
    if opts.mixed_precision == "bf16":
        kwargs["mp_policy"] = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
    if opts.cpu_offload:
        kwargs["offload_policy"] = CPUOffloadPolicy(pin_memory=d.device.type == "cuda")
    for block in model.model.layers:
        fully_shard(block, **kwargs)
    fully_shard(model, **kwargs)
    for m in model.modules():
        if isinstance(m, FSDPModule):
            m.set_gradient_divide_factor(1.0)  # sum over ranks: the loss is already divided by global tokens
            m.set_force_sum_reduction_for_comms(True)  # SUM, not PREMUL_SUM (which gloo lacks)
    from .trie.step import register_under_fsdp

    register_under_fsdp(model)
    return model


@dataclass
class FsdpOptions:
    """The train block's `fsdp` options (see the config schema), read by parallelize."""

    mixed_precision: str = "fp32"  # fp32 | bf16 (bf16 parameters in forward/backward, fp32 reduction)
    activation_checkpointing: bool = False
    cpu_offload: bool = False

    @classmethod
    def of(cls, cfg: TrainConfig) -> FsdpOptions:
        f = getattr(cfg, "fsdp", None)
        if f is None:
            return cls()
        return cls(str(f.mixed_precision), bool(f.activation_checkpointing), bool(f.cpu_offload))


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
    m = accumulate_gradients(model, batch, cfg, d, autocast_dtype)
    return {"loss": m.pop("loss"), "lr": lr, "grad_norm": optimizer_step(model, optimizer, lr, cfg.grad_clip), **m}


def accumulate_gradients(
    model: nn.Module, batch: Any, cfg: TrainConfig, d: Dist, autocast_dtype: torch.dtype | None
) -> dict[str, float]:
    """Forward/backward of this rank's rows of the global batch, micro-batch by micro-batch, into `.grad`
    (summed over ranks by FSDP on the last one). Every rank runs the same number of micro-batches (the batch
    splits evenly), so the collectives pair up. Returns the global loss and token counts."""
    micro = micro_batch_size(cfg, d.world)
    per_rank = cfg.batch_size // d.world
    if batch.num_rows != cfg.batch_size:
        raise ValueError(f"batch has {batch.num_rows} rows, expected batch_size {cfg.batch_size}")
    global_targets = batch.num_targets()
    denom = max(1, global_targets)
    local = batch.select(slice(d.rank * per_rank, (d.rank + 1) * per_rank))
    n_micro = per_rank // micro
    loss_sum = torch.zeros((), dtype=torch.float64)
    for m in range(n_micro):
        mb = local.select(slice(m * micro, (m + 1) * micro)).to(d.device)
        set_gradient_sync(model, m == n_micro - 1)
        with torch.autocast(d.device.type, dtype=autocast_dtype or torch.float32, enabled=autocast_dtype is not None):
            logits = model(mb.input_ids, mb.position_ids, mb.attention())
        ls = mb.loss_sum(logits)
        (ls / denom).backward()
        loss_sum += ls.detach().double().cpu()
    return {
        "loss": all_reduce_sum(loss_sum, d) / denom,
        "target_tokens": float(global_targets),
        "tokens": float(batch.num_tokens()),
    }


def all_reduce_sum(t: torch.Tensor, d: Dist) -> float:
    """A float64 scalar summed over ranks (on the device: NCCL reduces only device tensors)."""
    if not d.distributed:
        return float(t)
    x = t.to(d.device)
    dist.all_reduce(x, op=dist.ReduceOp.SUM)
    return float(x.cpu())


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
    """One SFT optimizer step with trie packing. See accumulate_gradients_trie."""
    lr = lr_at(step, cfg)
    m = accumulate_gradients_trie(model, batch, cfg, d, autocast_dtype, max_tokens)
    return {"loss": m.pop("loss"), "lr": lr, "grad_norm": optimizer_step(model, optimizer, lr, cfg.grad_clip), **m}


def accumulate_gradients_trie(
    model: nn.Module,
    batch: Any,
    cfg: TrainConfig,
    d: Dist,
    autocast_dtype: torch.dtype | None,
    max_tokens: int,
) -> dict[str, float]:
    """The global batch's conversations become one prefix forest (trie/), the same on every rank; its packed
    micro-batches are dealt to ranks balanced by token count, and each rank runs its own through the (sharded)
    model. The loss is the token mean over the global batch's assistant tokens, as in the flat step, so the
    gradients summed over ranks are the one-process ones."""
    from .trie import LossSpec, Trajectory, packed_forward_backward

    if batch.num_rows != cfg.batch_size or cfg.batch_size % d.world:
        raise ValueError(
            f"batch has {batch.num_rows} examples, expected batch_size {cfg.batch_size} divisible by {d.world}"
        )
    global_targets = batch.num_targets()
    trajectories = [
        Trajectory(tokens=e.ids, loss_mask=[0.0] + [float(t) for t in e.targets[1:]]) for e in batch.examples
    ]
    metrics: dict[str, float] = {}
    if global_targets > 0:
        with torch.autocast(d.device.type, dtype=autocast_dtype or torch.float32, enabled=autocast_dtype is not None):
            metrics = packed_forward_backward(
                model, trajectories, LossSpec.from_config("sft"), max_tokens, rank=d.rank, world=d.world
            )
    for p in model.parameters():  # a parameter no token reached still steps (AdamW decays it) as in flat
        if p.grad is None:
            p.grad = torch.zeros_like(p)
    return {
        "loss": metrics.get("loss", 0.0),
        "target_tokens": float(global_targets),
        "tokens": float(batch.num_tokens()),
        "unique_tokens": metrics.get("unique_tokens", 0.0),
        "packed_tokens": metrics.get("packed_tokens", 0.0),
        "micro_batches": metrics.get("micro_batches", 0.0),
    }
