"""Shared fixtures of the trainer tests: a small demo corpus + tokenizer, job specs, job subprocesses."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

TRAINER_DIR = Path(__file__).resolve().parents[1]

# A model small enough that a CPU step takes milliseconds (the `tiny` preset, shrunk).
TEST_MODEL_OVERRIDES = {
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
}


@pytest.fixture(scope="session")
def demo_dir(tmp_path_factory) -> Path:
    """Demo corpora at 1/20 scale and a 512-token tokenizer trained from them."""
    from trainflow_trainer.demo_data import generate

    out = tmp_path_factory.mktemp("demo")
    generate(out, seed=0, scale=0.05, vocab_size=512)
    return out


@pytest.fixture(scope="session")
def tok(demo_dir):
    from trainflow_trainer.tokenizer import Tokenizer

    return Tokenizer.load(demo_dir)


def make_spec(
    demo_dir: Path,
    out: str,
    work: Path,
    kind: str = "midtrain",
    steps: int = 4,
    every: int = 2,
    batch_size: int = 4,
    micro_batch_size: int | None = 2,
    seq_len: int = 64,
    keep_last=None,
    storage: dict | None = None,
    **extra,
) -> dict:
    if kind == "midtrain":
        sources = [
            {"path": str(demo_dir / "midtrain-code.jsonl"), "weight": 0.4},
            {"path": str(demo_dir / "midtrain-tools.jsonl"), "weight": 0.6},
        ]
    else:
        sources = [{"path": str(demo_dir / "sft.jsonl")}]
    spec = {
        "protocol": 1,
        "pipeline_id": "test",
        "run_id": "run-1",
        "stage_index": 0,
        "attempt": 1,
        "stage": {
            "name": f"{kind}-test",
            "kind": kind,
            "data": {"sources": sources, "seq_len": seq_len},
            "train": {
                "steps": steps,
                "batch_size": batch_size,
                "micro_batch_size": micro_batch_size,
                "lr": 3e-3,
                "warmup_steps": 1,
                "seed": 7,
            },
            "checkpoint": {"every": every, "keep_last": keep_last},
        },
        "model": {
            "init": {"preset": "tiny", "overrides": dict(TEST_MODEL_OVERRIDES)},
            "tokenizer": {"path": str(demo_dir)},
        },
        "input_checkpoint": None,
        "output_prefix": out,
        "resume": True,
        "status_uri": f"{out}/status.json",
        "storage": storage or {},
        "work_dir": str(work),
    }
    spec.update(extra)
    return spec


def job_env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(TRAINER_DIR)
    env["TRAINFLOW_DEVICE"] = "cpu"
    env.setdefault("OMP_NUM_THREADS", "1")
    env.setdefault("AWS_ACCESS_KEY_ID", "trainflow")
    env.setdefault("AWS_SECRET_ACCESS_KEY", "trainflow-secret")
    return env


def write_spec(spec: dict, path: Path) -> Path:
    path.write_text(json.dumps(spec))
    return path


def start_job(spec_path: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "trainflow_trainer.job", "--spec", str(spec_path)],
        cwd=TRAINER_DIR,
        env=job_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def run_job(spec_path: Path, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "trainflow_trainer.job", "--spec", str(spec_path)],
        cwd=TRAINER_DIR,
        env=job_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def wait_for(predicate, timeout: float, what: str, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        if proc is not None and proc.poll() is not None:
            err = proc.stderr.read()[-2000:] if proc.stderr is not None else "(stderr not piped)"
            raise AssertionError(f"job exited ({proc.returncode}) before {what}: {err}")
        time.sleep(0.05)
    if proc is not None:
        proc.send_signal(signal.SIGKILL)
    raise AssertionError(f"timed out waiting for {what}")
