"""Multi-rank training is FSDP2 on CPU too (gloo, torchrun): 2 ranks give the loss and every parameter gradient
of one process, step after step, for midtrain, SFT flat and SFT trie; trie under FSDP2 equals flat under FSDP2;
a batch that packs into one micro-batch is re-split so both ranks train; the train block's fsdp options change
what runs. The ranks run tests/dist_worker.py (several cases per process group: start-up dominates)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
from conftest import TRAINER_DIR, torchrun

WORKER = str(TRAINER_DIR / "tests" / "dist_worker.py")
CASES = {
    "midtrain": {"mode": "midtrain"},
    "flat": {"mode": "flat"},
    "trie": {"mode": "trie"},
    "trie32": {"mode": "trie", "dtype": "float32"},
    # a batch that fits one packed micro-batch: on two ranks it is re-packed (trie/distribute.py
    # pack_for_ranks) so that rank 1 does not idle through an empty pass
    "onepack": {"mode": "trie", "batch_size": 2, "max_tokens": 1000},
    "ac_offload": {"mode": "trie", "activation_checkpointing": True, "cpu_offload": True},
}
TWO_ONLY = {"bf16": {"mode": "trie", "dtype": "float32", "mixed_precision": "bf16"}}


def _run(out, cases: dict, ranks: int) -> dict:
    env = {**os.environ, "PYTHONPATH": str(TRAINER_DIR), "OMP_NUM_THREADS": "1", "TRAINFLOW_DEVICE": "cpu"}
    args = [WORKER, "--out", str(out), "--cases", json.dumps(cases)]
    cmd = torchrun(args, ranks) if ranks > 1 else [sys.executable, *args]
    r = subprocess.run(cmd, cwd=TRAINER_DIR, env=env, capture_output=True, text=True, timeout=400)
    assert r.returncode == 0, r.stderr[-4000:]
    return torch.load(out, weights_only=False)


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> tuple[dict, dict]:
    tmp = tmp_path_factory.mktemp("fsdp")
    return _run(tmp / "one.pt", CASES, 1), _run(tmp / "two.pt", {**CASES, **TWO_ONLY}, 2)


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).double().norm() / max(float(a.double().norm()), 1e-30))


def assert_same_run(a: dict, b: dict, tol: float) -> None:
    assert len(a["loss"]) == len(b["loss"]) >= 3
    for la, lb in zip(a["loss"], b["loss"]):
        assert abs(la - lb) <= tol * abs(la), (a["loss"], b["loss"])
    for step, (ga, gb) in enumerate(zip(a["grads"], b["grads"])):
        assert ga.keys() == gb.keys()
        for k in ga:
            assert ga[k].norm() > 0, (step, k)
            assert _rel(ga[k], gb[k]) <= tol, (step, k, _rel(ga[k], gb[k]))


@pytest.mark.parametrize("case,tol", [("midtrain", 1e-10), ("flat", 1e-10), ("trie", 1e-10), ("trie32", 1e-5)])
def test_two_fsdp2_ranks_equal_one_process(runs, case, tol):
    one, two = runs
    assert one[case]["world"] == 1 and not one[case]["sharded"]
    assert two[case]["world"] == 2 and two[case]["sharded"]  # every parameter a DTensor shard: real FSDP2
    assert_same_run(one[case], two[case], tol)


def test_trie_under_fsdp2_equals_flat_under_fsdp2(runs):
    _, two = runs
    # one conversation per flat row (each is longer than half the row), so both see the same conversations
    assert [m["target_tokens"] for m in two["flat"]["metrics"]] == [m["target_tokens"] for m in two["trie"]["metrics"]]
    assert all(m["unique_tokens"] < m["tokens"] for m in two["trie"]["metrics"])  # prefixes really were shared
    assert_same_run(two["flat"], two["trie"], 1e-10)


def test_a_batch_in_one_micro_batch_is_re_split_across_ranks(runs):
    # (uneven counts per rank, padded with empty passes, are exercised in test_rl_ranks.py on the same step)
    one, two = runs
    assert all(m["micro_batches"] == 1 for m in one["onepack"]["metrics"])  # one process: the budget as set
    assert all(m["micro_batches"] == 2 for m in two["onepack"]["metrics"])  # two ranks: one each
    assert_same_run(one["onepack"], two["onepack"], 1e-10)


def test_activation_checkpointing_and_cpu_offload_run_and_stay_exact(runs):
    one, two = runs
    # checkpointing re-runs each block's forward in backward; offload puts FSDP2 under CPUOffloadPolicy
    assert two["ac_offload"]["block_calls"] == 2 * two["trie"]["block_calls"]
    assert one["ac_offload"]["block_calls"] == 2 * one["trie"]["block_calls"]
    assert two["ac_offload"]["offload"] == "CPUOffloadPolicy" and two["trie"]["offload"] == "OffloadPolicy"
    assert_same_run(one["trie"], two["ac_offload"], 1e-10)


def test_bf16_mixed_precision_computes_in_bf16_and_reduces_in_fp32(runs):
    _, two = runs
    bf, fp = two["bf16"], two["trie32"]
    assert bf["seen_dtypes"] == ["bfloat16"] and fp["seen_dtypes"] == ["float32"]
    assert all(g.dtype == torch.float32 for g in bf["grads"][0].values())  # reduced (and kept) in fp32
    assert bf["loss"] != fp["loss"]
    for a, b in zip(bf["loss"], fp["loss"]):
        assert abs(a - b) <= 0.02 * abs(b)  # bf16 rounding, not a different computation
