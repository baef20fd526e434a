"""Checkpoints on S3 (the real MinIO of the local stack): commit protocol, verification, fall-back to the
previous committed step on a truncated file or a missing COMMIT.json, retention, multipart, a job round trip.
Needs the stack (`make dev-up`); fails loudly without it."""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path

import pytest
import torch
from conftest import BUCKET, ENDPOINT, make_spec, run_job, write_spec

from trainflow_trainer.checkpoint import (
    COMMIT_FILE,
    CheckpointError,
    apply_retention,
    commit,
    committed_steps,
    fetch_verified,
    latest_verified,
    step_dir,
)
from trainflow_trainer.storage import Storage, join, split_s3


@pytest.fixture
def prefix(storage):
    p = f"s3://{BUCKET}/tests/trainer-{uuid.uuid4().hex[:10]}/stage"
    yield p
    storage.delete_prefix(p.rsplit("/", 1)[0])


def stage_checkpoint(tmp_path: Path, step: int) -> Path:
    d = tmp_path / f"local-{step}"
    d.mkdir()
    (d / "model.safetensors").write_bytes(os.urandom(1000 + step))
    (d / "trainer_state.json").write_text(json.dumps({"step": step}))
    return d


def put(storage, uri: str, data: bytes) -> None:
    storage.write_bytes(uri, data)


def test_commit_verify_and_fall_back(storage, prefix, tmp_path):
    for s in (1, 2, 3):
        commit(stage_checkpoint(tmp_path, s), join(prefix, step_dir(s)), s, final=False, storage=storage)
    assert committed_steps(prefix, storage) == [1, 2, 3]
    logs: list[str] = []
    found = latest_verified(prefix, storage, tmp_path / "cache", log=logs.append)
    assert found is not None and found.step == 3 and not logs
    assert (found.local_dir / "model.safetensors").stat().st_size == 1003

    # Truncate a file of step 3: refused with a clear message, step 2 used.
    m3 = join(prefix, step_dir(3), "model.safetensors")
    put(storage, m3, storage.read_bytes(m3)[:500])
    found = latest_verified(prefix, storage, tmp_path / "cache2", log=logs.append)
    assert found is not None and found.step == 2
    assert len(logs) == 1 and "step-000003/model.safetensors: size 500 != 1003" in logs[0] and "previous" in logs[0]

    # Same size, different bytes: the checksum catches it.
    m2 = join(prefix, step_dir(2), "model.safetensors")
    put(storage, m2, bytes(1002))
    with pytest.raises(CheckpointError, match="sha256"):
        fetch_verified(join(prefix, step_dir(2)), storage, tmp_path / "cache3")

    # Step 4 uploaded without its COMMIT.json (the writer died): it does not exist for readers.
    d4 = stage_checkpoint(tmp_path, 4)
    for f in d4.iterdir():
        storage.upload_file(f, join(prefix, step_dir(4), f.name))
    assert committed_steps(prefix, storage) == [1, 2, 3]
    logs.clear()
    found = latest_verified(prefix, storage, tmp_path / "cache4", log=logs.append)
    assert found is not None and found.step == 1
    assert any("step-000004: no COMMIT.json" in m for m in logs)


def test_retention_keeps_last_k_and_finals(storage, prefix, tmp_path):
    for s, final in ((1, False), (2, False), (3, True), (4, False), (5, False)):
        commit(stage_checkpoint(tmp_path, s), join(prefix, step_dir(s)), s, final=final, storage=storage)
    deleted = apply_retention(prefix, storage, keep_last=2, log=lambda m: None)
    assert deleted == [1, 2]
    assert committed_steps(prefix, storage) == [3, 4, 5]
    assert storage.list_files(join(prefix, step_dir(1))) == []


def test_multipart_upload_round_trip(storage, prefix, tmp_path, monkeypatch):
    monkeypatch.setattr(Storage, "MULTIPART_THRESHOLD", 5 * 1024 * 1024)
    d = tmp_path / "big"
    d.mkdir()
    (d / "model.safetensors").write_bytes(os.urandom(11 * 1024 * 1024))
    uri = join(prefix, step_dir(1))
    commit(d, uri, 1, final=True, storage=storage)
    bucket, key = split_s3(join(uri, "model.safetensors"))
    etag = storage.s3.head_object(Bucket=bucket, Key=key)["ETag"]
    assert "-" in etag  # a multipart ETag: "<md5>-<parts>"
    local, manifest = fetch_verified(uri, storage, tmp_path / "cache")
    assert (local / "model.safetensors").read_bytes() == (d / "model.safetensors").read_bytes()
    assert manifest["final"] is True


def test_job_round_trip_on_s3_with_corrupt_latest(storage, prefix, tmp_path, demo_dir):
    store = {"endpoint": ENDPOINT, "region": "us-east-1", "force_path_style": True}
    spec = make_spec(demo_dir, prefix, tmp_path / "work", steps=4, every=2, storage=store)
    spec_path = write_spec(spec, tmp_path / "spec.json")
    r = run_job(spec_path)
    assert r.returncode == 0, r.stderr
    assert committed_steps(prefix, storage) == [2, 4]
    status = json.loads(storage.read_bytes(join(prefix, "status.json")))
    assert (
        status["state"] == "done" and status["step"] == 4 and status["last_checkpoint"] == join(prefix, "step-000004")
    )
    files = {e["path"] for e in json.loads(storage.read_bytes(join(prefix, "step-000004", COMMIT_FILE)))["files"]}
    assert {
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "train_state/.metadata",
        "train_state/__0_0.distcp",
        "trainer_state.json",
        "rng.pt",
    } <= files
    first = storage.read_bytes(join(prefix, "step-000004", "model.safetensors"))

    # Truncate the final checkpoint's weights: the rerun refuses it, resumes from step 2 and redoes steps 3-4,
    # ending with the same weights as the first time (resume is exact).
    m = join(prefix, "step-000004", "model.safetensors")
    put(storage, m, first[:100])
    r = run_job(spec_path)
    assert r.returncode == 0, r.stderr
    assert "checkpoint refused" in r.stderr
    status = json.loads(storage.read_bytes(join(prefix, "status.json")))
    assert status["resumed_from"] == {"uri": join(prefix, "step-000002"), "step": 2}
    assert storage.read_bytes(m) == first


def test_two_rank_job_on_s3_commits_every_ranks_shards(storage, prefix, tmp_path, demo_dir):
    """2 ranks, S3 output: each rank stages and uploads its own DCP shard, rank 0 commits over both; retention
    removes an old checkpoint's shards with it; the rerun after a lost final checkpoint resumes on 2 ranks from
    S3 and writes the same bytes again."""
    from test_distributed import run_ranks

    store = {"endpoint": ENDPOINT, "region": "us-east-1", "force_path_style": True}
    spec = make_spec(demo_dir, prefix, tmp_path / "work", steps=6, every=2, keep_last=1, storage=store)
    spec_path = write_spec(spec, tmp_path / "spec.json")
    r = run_ranks(spec_path, 2)
    assert r.returncode == 0, r.stderr[-3000:]
    assert committed_steps(prefix, storage) == [4, 6]  # keep_last 1 + the final one
    assert storage.list_files(join(prefix, step_dir(2))) == []  # step 2's shards went with it
    final = join(prefix, step_dir(6))
    files = {e["path"] for e in json.loads(storage.read_bytes(join(final, COMMIT_FILE)))["files"]}
    assert {"train_state/.metadata", "train_state/__0_0.distcp", "train_state/__1_0.distcp"} <= files
    assert set(storage.list_files(final)) == files | {COMMIT_FILE}  # nothing uploaded that is not committed
    assert [p.name for p in (tmp_path / "work" / "staging").glob("*/*")] == []  # every rank's staging removed
    first = {f: storage.read_bytes(join(final, f)) for f in ("model.safetensors", "train_state/__1_0.distcp")}

    storage.delete_prefix(final)  # the final checkpoint is lost: the rerun resumes from step 4 on S3
    r = run_ranks(spec_path, 2)
    assert r.returncode == 0, r.stderr[-3000:]
    status = json.loads(storage.read_bytes(join(prefix, "status.json")))
    assert status["resumed_from"] == {"uri": join(prefix, step_dir(4)), "step": 4}
    for f, data in first.items():
        assert storage.read_bytes(join(final, f)) == data, f


def test_sharded_hf_weights_are_read_by_every_reader(storage, prefix, tmp_path, demo_dir, monkeypatch):
    """Above runtime.HF_MAX_SHARD_BYTES the served weights are several safetensors files + an HF index, all
    committed; the trainer's loader (a next stage's input), the inference server's reload from S3 and the
    checkpoint's own DCP state agree on them bitwise."""
    from trainflow_trainer import job, runtime
    from trainflow_trainer.model import INDEX_FILE, load_state_dict
    from trainflow_trainer.serve.weights import load_checkpoint
    from trainflow_trainer.train_state import read_train_state

    monkeypatch.setattr(runtime, "HF_MAX_SHARD_BYTES", 100 * 1024)  # the test model's embedding alone is 128 KiB
    monkeypatch.setenv("TRAINFLOW_DEVICE", "cpu")
    monkeypatch.setenv("TRAINFLOW_S3_ENDPOINT", ENDPOINT)
    store = {"endpoint": ENDPOINT, "region": "us-east-1", "force_path_style": True}
    spec = make_spec(demo_dir, prefix, tmp_path / "work", steps=2, every=2, storage=store)
    assert job.main(["--spec", str(write_spec(spec, tmp_path / "spec.json"))]) == 0
    uri = join(prefix, step_dir(2))
    files = {e["path"] for e in json.loads(storage.read_bytes(join(uri, COMMIT_FILE)))["files"]}
    shards = sorted(f for f in files if f.endswith(".safetensors"))
    assert INDEX_FILE in files and "model.safetensors" not in files and len(shards) >= 3, sorted(files)
    assert shards == [f"model-{i:05d}-of-{len(shards):05d}.safetensors" for i in range(1, len(shards) + 1)]

    local, _ = fetch_verified(uri, storage, tmp_path / "cache")
    weights = load_state_dict(local)
    saved = read_train_state(local / "train_state")["model"]
    for k, v in weights.items():
        assert torch.equal(v, saved[k]), k
    served, step = load_checkpoint(uri)
    assert step == 2
    for k, v in served.state_dict().items():
        assert torch.equal(v, saved[k]), k

    # A next stage starts from the sharded folder (strict: every weight of the model must be found in it).
    nxt = make_spec(demo_dir, join(prefix, "next"), tmp_path / "work2", steps=1, every=1, storage=store)
    nxt["input_checkpoint"] = uri
    assert job.main(["--spec", str(write_spec(nxt, tmp_path / "next.json"))]) == 0
    fetched = tmp_path / "work2" / "inputs" / step_dir(2)
    assert (fetched / INDEX_FILE).is_file() and not (fetched / "train_state").exists()  # weights only
