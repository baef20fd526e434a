"""RFT and RL stages with `rollout.inference.backend: vllm`, end to end as real jobs (vLLM from its own
environment, started by the data-plane driver's fleet from the vLLM launch template, the driver's proxy in
front of it, agent workers, the trainer): a few steps on the tiny model. Each job starts one vLLM engine
(40-240 s on a busy CPU host)."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from specs import job_spec

from trainflow_trainer.rl.ledger_check import read_ledger

TRAINER = Path(__file__).resolve().parents[1]
VLLM = {"inference": {"backend": "vllm"}}


def model(tokenizer: Path) -> dict[str, Any]:
    return {"init": {"preset": "tiny"}, "tokenizer": {"path": str(tokenizer)}, "dtype": "fp32"}


def run_job(spec: dict[str, Any], spec_file: Path, timeout: float) -> subprocess.CompletedProcess[str]:
    spec_file.write_text(json.dumps(spec))
    cmd = [sys.executable, "-m", "trainflow_trainer.job", "--spec", str(spec_file)]
    r = subprocess.run(cmd, cwd=TRAINER, capture_output=True, text=True, timeout=timeout)
    assert r.returncode == 0, r.stderr[-4000:]
    return r


def generated(tree: dict[str, Any]) -> Iterator[tuple[int, float, int]]:
    """(token, log-prob, version) of every generated token of a trajectory tree (prompt tokens have none)."""
    for tok, lp, v in zip(tree["tokens"], tree["logprobs"], tree["versions"], strict=True):
        if lp is not None:
            yield tok, lp, v
    for child in tree["children"]:
        yield from generated(child)


def ledger_tokens(ledger: Path) -> list[tuple[int, float, int]]:
    out = []
    for e in read_ledger(ledger):
        if e["record"].get("kind") == "group":
            for t in e["record"]["trajectories"]:
                out += list(generated(t["tree"]))
    return out


def assert_vllm_fleet(driver_spec: Path, stderr: str) -> None:
    """The driver started the engine from the vLLM launch template (engines/vllm.py server_command) and
    controls it as vLLM; the engine that served was vLLM, not the CPU server."""
    spec = json.loads(driver_spec.read_text())
    assert spec["upstream_engine"] == "vllm" and spec["upstreams"] == []
    argv = spec["engines"]["argv"]
    assert "vllm.entrypoints.openai.api_server" in argv and "{port}" in argv and "{checkpoint}" in argv
    assert argv[argv.index("--worker-extension-cls") + 1] == "trainflow_vllm_ext.TrainflowReload"
    assert spec["engines"]["env"]["VLLM_SERVER_DEV_MODE"] == "1"
    assert "[engine 0]" in stderr and '"GET /health HTTP/1.1" 200' in stderr


def test_rl_and_rft_stages_run_on_vllm(tmp_path: Path, tokenizer: Path) -> None:
    rft_stage = {
        "name": "rft",
        "kind": "rft",
        "tasks": {"family": "demo", "count": 4},
        "rollout": {"group_size": 2, "concurrency": 4, "max_turns": 1, "max_new_tokens": 8, **VLLM},
        "rft": {"keep": "passing"},
        "train": {"steps": 1, "batch_size": 4},
    }
    rft = job_spec(rft_stage, model(tokenizer), str(tmp_path / "out" / "rft"), tmp_path / "work-rft", stage_index=0)
    r = run_job(rft, tmp_path / "rft.json", timeout=900)
    assert "rft rollouts: 8 episodes" in r.stderr
    assert_vllm_fleet(tmp_path / "work-rft" / "driver-collect.json", r.stderr)
    toks = ledger_tokens(tmp_path / "work-rft" / "ledger")
    assert toks and all(math.isfinite(lp) and lp <= 0 and v == 0 for _, lp, v in toks)

    rl_stage = {
        "name": "rl",
        "kind": "rl",
        "tasks": {"family": "demo", "count": 8},
        "rollout": {
            "group_size": 2,
            "concurrency": 4,
            "batch_groups": 2,
            "max_turns": 1,
            "max_new_tokens": 8,
            "max_staleness": 1,
            **VLLM,
        },
        "sampling": {"strategy": "difficulty", "filter_all_equal": False},
        "algorithm": {"name": "dapo", "clip_low": 0.2, "clip_high": 0.28, "loss_agg": "token-mean"},
        "packing": {"mode": "trie", "max_tokens": 2048},
        "train": {"steps": 3, "lr": 1e-4},
        "checkpoint": {"every": 3},
    }
    out = tmp_path / "out" / "rl"
    rl = job_spec(rl_stage, model(tokenizer), str(out), tmp_path / "work-rl", stage_index=1)
    r = run_job(rl, tmp_path / "rl.json", timeout=1200)
    assert json.loads((out / "step-000003" / "COMMIT.json").read_text())["final"] is True
    # a weight update after each step but the last: pause (keep), reload through our extension, resume
    assert_vllm_fleet(tmp_path / "work-rl" / "driver-rl.json", r.stderr)
    assert r.stderr.count('"POST /collective_rpc HTTP/1.1" 200') >= 2
    assert r.stderr.count('"POST /pause?mode=keep HTTP/1.1" 200') >= 2
    toks = ledger_tokens(tmp_path / "work-rl" / "ledger")
    assert toks and all(math.isfinite(lp) and lp <= 0 for _, lp, _v in toks)
    history = json.loads((out / "step-000003" / "trainer_state.json").read_text())["history"]
    assert [h["step"] for h in history] == [1, 2, 3]
