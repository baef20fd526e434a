"""Tracking: TensorBoard event files in storage under dashboard names; a resumed attempt continues the same
curves with no duplicate steps, as TensorBoard's own reader (the `tensorboard` package) sees them."""

from __future__ import annotations

import json
import socket
import struct
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from trainflow_trainer.contract import JobSpec
from trainflow_trainer.storage import Storage
from trainflow_trainer.tracking import TENSORBOARD_DIR, Tracker, tracked_name

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def resolved_demo() -> dict:
    out = subprocess.run(
        ["node", "bin/trainflow.js", "validate", "configs/demo.yaml", "--json", "--schema-only"],
        cwd=REPO,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return json.loads(out)


def spec_for(config: dict, stage: str, tmp: Path, tensorboard: bool = True, **tracking: object) -> JobSpec:
    st = next(s for s in config["stages"] if s["name"] == stage)
    return JobSpec.model_validate(
        {
            "protocol": 1,
            "pipeline_id": "p-1",
            "pipeline_name": config["metadata"]["name"],
            "run_id": "r",
            "stage_index": 0,
            "attempt": 1,
            "stage": st,
            "model": config["model"],
            "input_checkpoint": None,
            "output_prefix": str(tmp / "out" / stage),
            "resume": True,
            "status_uri": str(tmp / "status.json"),
            "storage": {},
            "tracking": {**config["tracking"], "tensorboard": tensorboard, **tracking},
            "work_dir": str(tmp / "work"),
        }
    )


def scalars(folder: Path, tag: str) -> list[tuple[int, float]]:
    acc = EventAccumulator(str(folder))
    acc.Reload()
    return [(e.step, e.value) for e in acc.Scalars(tag)]


def test_dashboard_names_follow_verl_where_it_has_one() -> None:
    assert tracked_name("rl", "loss") == "actor/pg_loss"
    assert tracked_name("rl", "reward_mean") == "critic/score/mean"
    assert tracked_name("sft", "loss") == "train/loss"
    assert tracked_name("rl", "no_signal_fraction") == "trainflow/no_signal_fraction"


def test_resumed_attempt_continues_the_curve_without_duplicate_steps(resolved_demo: dict, tmp_path: Path) -> None:
    spec = spec_for(resolved_demo, "sft", tmp_path)
    storage = Storage()
    first = Tracker(spec, storage, resumed_step=None, enabled=True)
    for step in range(1, 7):
        first.log(step, {"loss": 10.0 + step})
    first.sync()  # uploaded before a commit at step 6 that never happened: the job died
    del first

    # the retry resumes from the checkpoint of step 4, on a machine whose work folder is gone
    second = Tracker(spec, storage, resumed_step=4, enabled=True)
    for step in range(5, 9):
        second.log(step, {"loss": 100.0 + step})
    second.close()

    remote = Path(spec.output_prefix) / TENSORBOARD_DIR
    points = scalars(remote, "train/loss")
    assert [s for s, _ in points] == list(range(1, 9))
    assert [v for _, v in points] == [11.0, 12.0, 13.0, 14.0, 105.0, 106.0, 107.0, 108.0]


def test_tensorboard_false_writes_nothing(resolved_demo: dict, tmp_path: Path) -> None:
    spec = spec_for(resolved_demo, "sft", tmp_path, tensorboard=False)
    t = Tracker(spec, Storage(), resumed_step=None, enabled=True)
    t.log(1, {"loss": 1.0})
    t.close()
    assert not (Path(spec.output_prefix) / TENSORBOARD_DIR).exists()


# ---- MLflow: a real tracking server (the one `trainflow dev up --mlflow` runs, installed by make setup-mlflow)


def mlflow_binary() -> Path:
    venvs = sorted((Path.home() / ".cache" / "trainflow" / "venvs").glob("mlflow-*/bin/mlflow"))
    assert venvs, "MLflow's server is not installed: run `make setup-mlflow`"
    return venvs[-1]


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    root = tmp_path_factory.mktemp("mlflow")
    args = ["server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
    args += ["--backend-store-uri", f"sqlite:///{root}/mlflow.db", "--default-artifact-root", str(root / "a")]
    proc = subprocess.Popen([str(mlflow_binary()), *args], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                assert proc.poll() is None, "the MLflow server exited"
                assert time.monotonic() < deadline, "the MLflow server did not become healthy"
                time.sleep(0.5)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_mlflow_pipeline_run_with_stage_children_and_no_duplicate_steps_after_a_resume(
    resolved_demo: dict, tmp_path: Path, mlflow_server: str
) -> None:
    from mlflow.tracking import MlflowClient

    mlflow = {"tracking_uri": mlflow_server, "experiment": "trainflow-test"}
    sft = spec_for(resolved_demo, "sft", tmp_path, tensorboard=False, mlflow=mlflow)
    rl = spec_for(resolved_demo, "rl", tmp_path, tensorboard=False, mlflow=mlflow)
    first = Tracker(sft, Storage(), resumed_step=None, enabled=True)
    for step in range(1, 7):
        first.log(step, {"loss": 10.0 + step})
    del first  # died at step 6; the retry resumes from step 4
    second = Tracker(sft, Storage(), resumed_step=4, enabled=True)
    for step in range(5, 9):
        second.log(step, {"loss": 10.0 + step})
    second.close()
    third = Tracker(rl, Storage(), resumed_step=None, enabled=True)
    third.log(1, {"reward_mean": 0.5, "no_signal_fraction": 0.25})
    third.close()

    client = MlflowClient(tracking_uri=mlflow_server)
    exp = client.get_experiment_by_name("trainflow-test")
    assert exp is not None
    runs = client.search_runs([exp.experiment_id])
    parents = [r for r in runs if r.data.tags.get("trainflow.role") == "pipeline"]
    children = {r.data.tags["trainflow.stage"]: r for r in runs if r.data.tags.get("trainflow.role") == "stage"}
    assert len(parents) == 1 and set(children) == {"sft", "rl"}
    assert all(c.data.tags["mlflow.parentRunId"] == parents[0].info.run_id for c in children.values())
    history = client.get_metric_history(children["sft"].info.run_id, "train/loss")
    assert sorted(m.step for m in history) == list(range(1, 9))
    rl_metrics = children["rl"].data.metrics
    assert rl_metrics == {"critic/score/mean": 0.5, "trainflow/no_signal_fraction": 0.25}


# ---- W&B: offline mode, no network; the run folder lands in storage and reads back


def wandb_records(raw: bytes) -> Iterator[bytes]:
    """The records of a .wandb transaction log: a 7-byte file header (':W&B', magic 0xBEE1, version 0), then
    LevelDB-log framing in 32 KiB blocks (7-byte record headers: crc32c, length, type full/first/middle/last).
    The wandb package no longer ships a Python reader for it."""
    ident, magic, version = struct.unpack_from("<4sHB", raw, 0)
    assert (ident, magic, version) == (b":W&B", 0xBEE1, 0), "not a .wandb file"
    pos, block, pending = 7, 32768, b""
    while pos + 7 <= len(raw):
        if block - pos % block < 7:  # too little room left in this block for a header: the rest is padding
            pos += block - pos % block
            continue
        _crc, length, kind = struct.unpack_from("<IHB", raw, pos)
        data, pos = raw[pos + 7 : pos + 7 + length], pos + 7 + length
        if kind == 0 and length == 0:
            break
        if kind == 1:
            yield data
        elif kind == 2:
            pending = data
        elif kind == 3:
            pending += data
        elif kind == 4:
            yield pending + data


def test_wandb_offline_run_folder_is_written_to_storage_and_readable(resolved_demo: dict, tmp_path: Path) -> None:
    from wandb.proto import wandb_internal_pb2

    spec = spec_for(
        resolved_demo, "rl", tmp_path, tensorboard=False, wandb={"project": "trainflow-test", "mode": "offline"}
    )
    t = Tracker(spec, Storage(), resumed_step=None, enabled=True)
    for step in range(1, 4):
        t.log(step, {"reward_mean": 0.1 * step})
    t.close()
    files = sorted((Path(spec.output_prefix) / "wandb").rglob("*.wandb"))
    assert len(files) == 1
    steps = []
    for data in wandb_records(files[0].read_bytes()):
        rec = wandb_internal_pb2.Record()  # type: ignore[attr-defined]  # generated protobuf module, no stubs
        rec.ParseFromString(data)
        if rec.WhichOneof("record_type") == "history":
            items = {i.key or "/".join(i.nested_key): i.value_json for i in rec.history.item}
            if "critic/score/mean" in items:
                steps.append((int(items["_step"]), float(items["critic/score/mean"])))
    assert steps == [(1, 0.1), (2, 0.2), (3, pytest.approx(0.3))]
