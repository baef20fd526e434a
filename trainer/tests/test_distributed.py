"""The data-parallel path through the job runner: 2 FSDP2 processes over gloo (torchrun) give the loss curve of
1 process on the same global batch, and the same weights (checkpoints gathered from the shards) — midtrain
(flat) and SFT with trie packing. Gradient-level exactness: test_fsdp.py."""

from __future__ import annotations

import json
import socket
import subprocess
import sys

import pytest
import torch
from conftest import TRAINER_DIR, job_env, make_spec, run_job, write_spec
from safetensors.torch import load_file


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize(
    "kind,blocks", [("midtrain", {}), ("sft", {"packing": {"mode": "trie", "max_tokens": 256}})], ids=["flat", "trie"]
)
def test_two_gloo_processes_match_one(tmp_path, demo_dir, kind, blocks):
    steps = 4
    one, two = tmp_path / "one", tmp_path / "two"
    common = {"kind": kind, "steps": steps, "every": steps, "batch_size": 4, "micro_batch_size": 2, **blocks}
    spec1 = make_spec(demo_dir, str(one), tmp_path / "w1", **common)
    spec2 = make_spec(demo_dir, str(two), tmp_path / "w2", **common)
    r = run_job(write_spec(spec1, tmp_path / "one.json"))
    assert r.returncode == 0, r.stderr
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
        "-m",
        "trainflow_trainer.job",
        "--spec",
        str(write_spec(spec2, tmp_path / "two.json")),
    ]
    r = subprocess.run(cmd, cwd=TRAINER_DIR, env=job_env(), capture_output=True, text=True, timeout=240)
    assert r.returncode == 0, r.stderr[-3000:]

    final = f"step-{steps:06d}"
    s1 = json.loads((one / final / "trainer_state.json").read_text())
    s2 = json.loads((two / final / "trainer_state.json").read_text())
    assert s2["world_size"] == 2 and s1["world_size"] == 1
    assert len(s1["loss_history"]) == steps
    for a, b in zip(s1["loss_history"], s2["loss_history"]):
        assert abs(a - b) <= 1e-6 * abs(a), (s1["loss_history"], s2["loss_history"])
    assert s1["data"] == s2["data"]
    w1, w2 = load_file(one / final / "model.safetensors"), load_file(two / final / "model.safetensors")
    for k in w1:
        assert torch.allclose(w1[k], w2[k], atol=1e-6, rtol=1e-5), k
