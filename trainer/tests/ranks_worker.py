"""The RL and RFT updates of a tiny model on fixed synthetic batches, on one process or on every rank of a
torchrun job (test_rl_ranks.py runs both and compares). Each case trains a few steps through the stages' own
update paths (rl/objective.py `update`, the RFT step of stages/rft.py), recording each step's loss, then
takes one more forward/backward without stepping and records every parameter's gradient and weight.

    python -m torch.distributed.run --nproc_per_node 2 tests/ranks_worker.py OUT.pt
"""

from __future__ import annotations

import copy
import sys
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from trainflow_trainer.model import ModelConfig, Transformer
from trainflow_trainer.rl.objective import Objective, update, with_logprobs
from trainflow_trainer.rl.ranks import shares, sync_gradients
from trainflow_trainer.train import Dist, init_distributed, optimizer_step, parallelize
from trainflow_trainer.trie import LossSpec, Trajectory, forward_backward

CFG = ModelConfig(
    vocab_size=23,
    hidden_size=32,
    intermediate_size=48,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=256,
)
STEPS = 3
LR = 3e-3


@dataclass(frozen=True)
class Case:
    kind: str  # rl | rft
    dtype: torch.dtype
    max_tokens: int  # 30: three micro-batches a step (2 + 1 on two ranks); 4096: one (rank 1 has none)
    mode: str = "trie"
    loss: LossSpec = LossSpec(kind="ce")
    minibatches: int = 1


RL_LOSS = LossSpec(
    kind="ppo",
    aggregation="token_mean",
    eps_low=0.2,
    eps_high=0.28,
    kl_coef=0.05,
    entropy_coef=0.01,
    decoupled=True,
    behav_weight_cap=2.0,
)
SEQ_LOSS = LossSpec(kind="ppo", aggregation="seq_mean", eps_low=0.2, eps_high=0.2, temperature=0.8)
CASES: dict[str, Case] = {
    "rl-f64": Case("rl", torch.float64, 30, loss=RL_LOSS, minibatches=2),
    "rl-f64-seq-flat": Case("rl", torch.float64, 30, mode="flat", loss=SEQ_LOSS),
    "rl-f64-one-micro-batch": Case("rl", torch.float64, 4096, loss=RL_LOSS, minibatches=2),
    "rl-f32": Case("rl", torch.float32, 30, loss=RL_LOSS, minibatches=2),
    "rft-f64": Case("rft", torch.float64, 30),
    "rft-f64-one-micro-batch": Case("rft", torch.float64, 4096),
    "rft-f32": Case("rft", torch.float32, 30),
}


def batch(step: int, kind: str) -> list[Trajectory]:
    """Three GRPO-shaped groups of four: a shared prompt, two branches sharing a first turn, generated tokens
    trained (behaviour log-probs and group-normalised advantages for rl)."""
    rng = np.random.default_rng(1000 + step)
    out: list[Trajectory] = []
    for _ in range(3):
        prompt = rng.integers(1, CFG.vocab_size, int(rng.integers(5, 9))).tolist()
        turn = rng.integers(1, CFG.vocab_size, 3).tolist()
        rewards = rng.normal(size=4)
        adv = (rewards - rewards.mean()) / (rewards.std() + 1e-6)
        for b in range(4):
            head = prompt + (turn if b < 2 else [])
            gen = rng.integers(1, CFG.vocab_size, int(rng.integers(2, 7))).tolist()
            tokens = head + gen
            mask = [0.0] * len(prompt) + [1.0] * (len(tokens) - len(prompt))
            if kind == "rft":
                out.append(Trajectory(tokens=tokens, loss_mask=mask))
                continue
            logprobs = [0.0] * len(prompt) + rng.normal(-3.0, 0.4, len(tokens) - len(prompt)).tolist()
            out.append(
                Trajectory(
                    tokens=tokens,
                    loss_mask=mask,
                    logprobs=logprobs,
                    versions=[0] * len(tokens),
                    advantage=float(adv[b]),
                )
            )
    return out


def full(t: torch.Tensor) -> torch.Tensor:
    """A (possibly FSDP-sharded: DTensor) tensor whole, on CPU, in float64 (a collective when sharded)."""
    whole = t.full_tensor() if hasattr(t, "full_tensor") else t
    return whole.detach().cpu().double().clone()


def run_case(case: Case, d: Dist | None) -> dict[str, Any]:
    """Trains STEPS steps of the case on one process (d None) or on d's ranks; returns losses, final gradients
    and weights (whole), and the micro-batch count of each step."""
    torch.manual_seed(0)
    base = Transformer(CFG).to(case.dtype)
    reference = copy.deepcopy(base).requires_grad_(False)  # the KL reference: the initial policy, whole
    model: nn.Module = parallelize(base, d) if d is not None else base
    optimizer = torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=0.01, foreach=False)
    obj = Objective(case.loss, True, "none", case.minibatches, 0.0, None)
    pack = {"mode": case.mode, "max_tokens": case.max_tokens}
    losses: list[float] = []
    micro: list[float] = []
    for step in range(STEPS + 1):
        trajs = batch(step, case.kind)
        if case.kind == "rl" and case.loss.kl_coef:
            with_logprobs(reference, trajs, case.loss, case.max_tokens, "ref_logprobs")
        last = step == STEPS
        if case.kind == "rl" and not last:
            m, _ = update(model, optimizer, trajs, obj, pack, LR, 1.0, d)
        else:  # the RFT step (stages/rft.py), or the final pass: gradients kept, no step
            m = forward_backward(pack, model, trajs, case.loss, **shares(d))
            sync_gradients(model, d)
            if not last:
                optimizer_step(model, optimizer, LR, 1.0)
        losses.append(float(m["loss"]))
        micro.append(float(m["micro_batches"]))
    named = list(model.named_parameters())
    grads = {n: full(p.grad) for n, p in named if p.grad is not None}
    weights = {n: full(p) for n, p in named}
    return {"losses": losses, "grads": grads, "weights": weights, "micro_batches": micro}


def main(out: str) -> None:
    d = init_distributed()
    assert d.distributed, "run under torchrun with several processes"
    torch.set_num_threads(1)
    results = {name: run_case(case, d) for name, case in CASES.items()}
    if d.is_main:
        torch.save({"world": d.world, "fsdp": d.fsdp, "results": results}, out)
    torch.distributed.barrier()
    torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1])
