"""RL and RFT on several ranks train what one process trains.

Two gloo ranks under torchrun (tests/ranks_worker.py) and one process run the same cases: a few RL updates
(PPO-clip, decoupled with two minibatches, KL to a reference and entropy; seq-mean and flat packing) and RFT
steps on fixed synthetic GRPO-shaped batches. Each rank trains the packed micro-batches trie/distribute.py
deals it, the gradients are summed over ranks. Every step's loss and every parameter's gradient after the
steps match the one-process run: relative error ≤ 1e-10 in float64, ≤ 1e-5 in float32 (the final weights too, to
1e-10 in float64; in float32 to 1e-3, Adam's steps amplifying rounding in near-zero gradients). The
batches pack into uneven shares (e.g. two micro-batches on rank 0, one on rank 1) or into one (rank 1 has
none and runs an empty pass): uneven counts finish, and still match.
"""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from conftest import TRAINER_DIR, job_env
from ranks_worker import CASES, CFG, STEPS, batch, run_case
from test_distributed import free_port

from trainflow_trainer.model import Transformer
from trainflow_trainer.rl.objective import split_minibatches
from trainflow_trainer.trie import build_forest
from trainflow_trainer.trie.distribute import assign_to_ranks
from trainflow_trainer.trie.packer import loss_entries, pack


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory: pytest.TempPathFactory) -> dict:
    out = tmp_path_factory.mktemp("ranks") / "two.pt"
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "--master_addr",
        "127.0.0.1",
        "--master_port",
        str(free_port()),
        "tests/ranks_worker.py",
        str(out),
    ]
    env = {**job_env(), "PYTHONPATH": f"{TRAINER_DIR}:{TRAINER_DIR / 'tests'}"}
    r = subprocess.run(cmd, cwd=TRAINER_DIR, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-4000:]
    saved = torch.load(out, weights_only=False)
    assert saved["world"] == 2
    return saved["results"]


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-30))


@pytest.mark.parametrize("name", list(CASES))
def test_two_ranks_match_one_process(two_ranks: dict, name: str) -> None:
    case = CASES[name]
    tol = 1e-10 if case.dtype == torch.float64 else 1e-5
    one, two = run_case(case, None), two_ranks[name]
    assert one["micro_batches"] == two["micro_batches"]
    # the ranks' shares: rank 1 had none (one micro-batch), or uneven ones came up (e.g. 2 + 1)
    shares = []
    for step in range(STEPS + 1):
        for chunk in split_minibatches(batch(step, case.kind), case.minibatches if step < STEPS else 1):
            forest = build_forest(chunk, share_prefixes=case.mode == "trie")
            shares.append(
                [len(ix) for ix in assign_to_ranks(pack(forest, case.max_tokens, entries=loss_entries(forest)), 2)]
            )
    if case.max_tokens > 1000:
        assert all(s == [1, 0] for s in shares), shares
    else:
        assert any(a != b for a, b in shares) and all(b > 0 for _, b in shares), shares
    for a, b in zip(two["losses"], one["losses"]):
        assert abs(a - b) <= tol * abs(b), (name, two["losses"], one["losses"])
    assert len(set(one["losses"])) == len(one["losses"])  # the steps trained different batches
    assert one["grads"].keys() == two["grads"].keys() == one["weights"].keys()
    for k, g in one["grads"].items():
        assert float(g.abs().max()) > 0, k  # every parameter was trained
        assert rel_err(two["grads"][k], g) <= tol, (name, k, rel_err(two["grads"][k], g))
        # Adam divides by the gradient's RMS, so in float32 a rounding difference in a near-zero gradient is a
        # visible step of a near-zero bias; in float64 the weights agree as closely as the gradients
        assert rel_err(two["weights"][k], one["weights"][k]) <= (tol if case.dtype == torch.float64 else 1e-3), k
    # and the steps moved the weights (the comparison is not of untouched initial weights)
    torch.manual_seed(0)
    init = Transformer(CFG).to(case.dtype).state_dict()
    assert any(rel_err(one["weights"][k], init[k].double()) > 1e-4 for k in one["weights"])
