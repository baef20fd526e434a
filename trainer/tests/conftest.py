"""Shared fixtures of the trainer tests: a small demo corpus + tokenizer, job specs, job subprocesses."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from specs import job_spec

from trainflow_trainer.storage import Storage, StorageConfig

TRAINER_DIR = Path(__file__).resolve().parents[1]

# The local stack's MinIO (tests that need it fail loudly when it is down)
ENDPOINT = os.environ.get("TRAINFLOW_S3_ENDPOINT", "http://127.0.0.1:9000")
BUCKET = os.environ.get("TRAINFLOW_BUCKET", "trainflow")
os.environ.setdefault("AWS_ACCESS_KEY_ID", "trainflow")
os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "trainflow-secret")

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
    keep_last: int | None = None,
    storage: dict | None = None,
    model: dict | None = None,
    sources: list[dict] | None = None,
    **stage_blocks: Any,
) -> dict:
    """The job spec of a small LM stage on the demo corpora, resolved by the real config resolver (specs.py).
    keep_last None: the schema's default; model: the model block (default: the test model, demo tokenizer);
    sources: the data sources (default: the demo corpus of the kind); stage_blocks: further stage blocks as a
    config says them (e.g. packing={"mode": "trie"})."""
    if sources is None and kind == "midtrain":
        sources = [
            {"path": str(demo_dir / "midtrain-code.jsonl"), "weight": 0.4},
            {"path": str(demo_dir / "midtrain-tools.jsonl"), "weight": 0.6},
        ]
    elif sources is None:
        sources = [{"path": str(demo_dir / "sft.jsonl")}]
    train = {"steps": steps, "batch_size": batch_size, "lr": 3e-3, "warmup_steps": 1, "seed": 7}
    if micro_batch_size is not None:
        train["micro_batch_size"] = micro_batch_size
    checkpoint = {"every": every} if keep_last is None else {"every": every, "keep_last": keep_last}
    stage = {
        "name": f"{kind}-test",
        "kind": kind,
        "data": {"sources": sources, "seq_len": seq_len},
        "train": train,
        "checkpoint": checkpoint,
        **stage_blocks,
    }
    if model is None:
        model = {
            "init": {"preset": "tiny", "overrides": dict(TEST_MODEL_OVERRIDES)},
            "tokenizer": {"path": str(demo_dir / "tokenizer.json")},
        }
    return job_spec(stage, model, out, work, storage=storage, status_uri=f"{out}/status.json")


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


@pytest.fixture(scope="module")
def storage() -> Storage:
    """The local stack's MinIO as the trainer's storage."""
    import urllib.request

    try:
        urllib.request.urlopen(f"{ENDPOINT}/minio/health/live", timeout=3)
    except OSError as e:
        pytest.fail(f"MinIO is not reachable at {ENDPOINT} ({e}): start the local stack (make dev-up)")
    return Storage(StorageConfig(endpoint=ENDPOINT, region="us-east-1", force_path_style=True))


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The full-size demo data's tokenizer (python -m trainflow_trainer.demo_data, as `make demo-data`)."""
    d = tmp_path_factory.mktemp("demo")
    subprocess.run(
        [sys.executable, "-m", "trainflow_trainer.demo_data", str(d), "--quiet"],
        cwd=TRAINER_DIR,
        check=True,
        capture_output=True,
    )
    return d / "tokenizer.json"


def free_port() -> int:
    """A free loopback port (torchrun's rendezvous)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun(args: list[str], nproc: int = 2) -> list[str]:
    """`python -m torch.distributed.run` with `nproc` ranks on this host, then `args` (a script or `-m MODULE`)."""
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        str(nproc),
        "--master_addr",
        "127.0.0.1",
        "--master_port",
        str(free_port()),
        *args,
    ]
