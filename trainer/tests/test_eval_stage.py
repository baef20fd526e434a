"""The eval stage as a real job on the tiny model: inference server, data plane in eval mode, agent workers.
Its pass@k equals a direct count over every k-subset of the samples the ledger recorded; the sampler's
statistics are not touched; a retry after the commit reports the committed result instead of re-running."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import uuid
from itertools import combinations
from pathlib import Path

import pytest
from conftest import BUCKET, ENDPOINT
from specs import job_spec  # the local stack's MinIO (its `storage` fixture: conftest.py)

from trainflow_trainer.checkpoint import commit
from trainflow_trainer.model import Transformer, preset, save_hf
from trainflow_trainer.rl.ledger_check import read_ledger
from trainflow_trainer.storage import Storage, join
from trainflow_trainer.tasks import demo_task, write_tasks_jsonl
from trainflow_trainer.tasks.task import Task
from trainflow_trainer.tokenizer import Tokenizer

TRAINER = Path(__file__).resolve().parents[1]


def parity_task(i: int, level: int) -> Task:
    """A task whose verdict varies from sample to sample: the answer is read as a raw string, and it passes
    when that string's length is even (a random model's answers pass about half the time)."""
    return Task(
        id=f"parity/{i}",
        family="jsonl",
        prompt=[{"role": "user", "content": "Say anything."}],
        verifier={"kind": "unit_tests", "prefix": "x = r'''", "test": "'''\nassert len(x) % 2 == 0"},
        meta={"difficulty": level},
    )


def tiny_checkpoint(folder: Path, tokenizer: Path) -> Path:
    tok = Tokenizer.load(tokenizer)
    cfg = preset("tiny", vocab_size=tok.vocab_size)
    model = Transformer(cfg)
    folder.mkdir(parents=True)
    save_hf(model.state_dict(), cfg, folder)
    tok.save(folder)
    commit(folder, str(folder), 100, True, Storage())
    return folder


def direct_pass_at_k(rewards: list[float], k: int) -> float:
    subsets = list(combinations(range(len(rewards)), k))
    return sum(1 for s in subsets if any(rewards[i] >= 1.0 for i in s)) / len(subsets)


def test_eval_stage_reports_pass_at_k_of_its_samples_and_passes_its_input_on(tmp_path: Path) -> None:
    subprocess.run(
        [sys.executable, "-m", "trainflow_trainer.demo_data", str(tmp_path / "demo"), "--quiet"],
        cwd=TRAINER,
        check=True,
        capture_output=True,
    )
    ckpt = tiny_checkpoint(tmp_path / "ckpt" / "step-000100", tmp_path / "demo" / "tokenizer.json")
    tasks = [parity_task(i, i % 2) for i in range(4)] + [demo_task(0, 0)]
    write_tasks_jsonl(tmp_path / "tasks.jsonl", tasks)
    out, work = tmp_path / "run" / "eval", tmp_path / "work"
    # the pipeline starts from the checkpoint, so the eval stage may come first (specs.job_spec resolves it)
    stage = {
        "name": "eval",
        "kind": "eval",
        "tasks": {"family": "jsonl", "path": str(tmp_path / "tasks.jsonl")},
        "rollout": {"concurrency": 4, "max_turns": 1, "max_new_tokens": 12, "temperature": 1.0, "top_p": 1.0},
        "eval": {"samples": 4, "pass_k": [1, 2, 4]},
        "checkpoint": {"every": 100},
    }
    model = {"init": {"checkpoint": str(ckpt)}, "dtype": "fp32"}
    spec = job_spec(stage, model, str(out), work, input_checkpoint=str(ckpt), stage_index=1)
    (tmp_path / "spec.json").write_text(json.dumps(spec))
    cmd = [sys.executable, "-m", "trainflow_trainer.job", "--spec", str(tmp_path / "spec.json")]
    r = subprocess.run(cmd, cwd=TRAINER, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]

    result = json.loads((out / "step-000001" / "eval.json").read_text())
    assert json.loads((out / "step-000001" / "COMMIT.json").read_text())["final"] is True
    assert result["checkpoint"] == str(ckpt)  # what the job activity passes on as the stage's output
    m = result["metrics"]

    # the same samples, as the data plane recorded them: one group per task, each task once
    groups = [e["record"] for e in read_ledger(work / "ledger") if e["record"].get("kind") == "group"]
    assert sorted(g["task_id"] for g in groups) == sorted(t.id for t in tasks)
    rewards = {g["task_id"]: [float(t["reward"]) for t in g["trajectories"]] for g in groups}
    assert all(len(v) == 4 for v in rewards.values())
    # the estimator is exercised, not trivially 0 or 1: some task passed some of its samples, not all
    assert any(0 < sum(x >= 1.0 for x in v) < 4 for v in rewards.values()), rewards
    for k in (1, 2, 4):
        want = sum(direct_pass_at_k(v, k) for v in rewards.values()) / len(tasks)
        assert abs(m[f"pass@{k}"] - want) < 1e-12, (k, m, rewards)
    flat = [x for v in rewards.values() for x in v]
    assert m["pass_rate"] == sum(x >= 1.0 for x in flat) / len(flat)
    assert m["reward_mean"] == sum(flat) / len(flat)
    assert m["tasks"] == 5 and m["samples"] == 20 and m["episodes"] == 20
    for level in (0, 1):
        at = [x for t in tasks if t.meta["difficulty"] == level for x in rewards[t.id]]
        assert m[f"pass_rate_level_{level}"] == sum(x >= 1.0 for x in at) / len(at)
    status = [json.loads(ln.split(" ", 1)[1]) for ln in r.stdout.splitlines() if ln.startswith("TRAINFLOW_STATUS")]
    assert status[-1]["state"] == "done" and status[-1]["metrics"] == m
    # no sampler statistics: an eval draws every task once and records nothing for the training stages' sampler
    assert not (tmp_path / "run" / "sampling").exists()
    # tracked like the other stages: TensorBoard's reader sees the eval metrics at step 1
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(out / "tensorboard"))
    acc.Reload()
    assert [(e.step, e.value) for e in acc.Scalars("trainflow/pass@1")] == [(1, pytest.approx(m["pass@1"]))]

    # a retry after the commit reports the committed eval again without running rollouts
    before = len(read_ledger(work / "ledger"))
    r2 = subprocess.run(cmd, cwd=TRAINER, capture_output=True, text=True, timeout=120)
    assert r2.returncode == 0, r2.stderr[-3000:]
    assert "reported again" in r2.stderr and "inference server" not in r2.stderr
    assert len(read_ledger(work / "ledger")) == before
    status2 = [json.loads(ln.split(" ", 1)[1]) for ln in r2.stdout.splitlines() if ln.startswith("TRAINFLOW_STATUS")]
    assert status2[-1]["metrics"] == m


def test_eval_stage_in_s3_commits_its_result_there_and_leaves_the_sampler_statistics_alone(
    tmp_path: Path,
    storage: Storage,
) -> None:
    subprocess.run(
        [sys.executable, "-m", "trainflow_trainer.demo_data", str(tmp_path / "demo"), "--quiet"],
        cwd=TRAINER,
        check=True,
        capture_output=True,
    )
    root = f"s3://{BUCKET}/tests/eval-{uuid.uuid4().hex[:10]}"
    local = tiny_checkpoint(tmp_path / "ckpt" / "step-000100", tmp_path / "demo" / "tokenizer.json")
    ckpt = f"{root}/rl/step-000100"
    commit(local, ckpt, 100, True, storage)
    out = f"{root}/eval"
    stage = {
        "name": "eval",
        "kind": "eval",
        "tasks": {"family": "demo", "count": 5, "seed": 3},
        "rollout": {"concurrency": 4, "max_turns": 1, "max_new_tokens": 8, "temperature": 1.0, "top_p": 1.0},
        "eval": {"samples": 2, "pass_k": [1, 2]},
    }
    store = {"endpoint": ENDPOINT, "region": "us-east-1", "force_path_style": True}
    model = {"init": {"checkpoint": ckpt}, "dtype": "fp32"}
    spec = job_spec(stage, model, out, tmp_path / "work", storage=store, input_checkpoint=ckpt, stage_index=1)
    (tmp_path / "spec.json").write_text(json.dumps(spec))
    cmd = [sys.executable, "-m", "trainflow_trainer.job", "--spec", str(tmp_path / "spec.json")]
    try:
        r = subprocess.run(cmd, cwd=TRAINER, capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stderr[-3000:]
        result = json.loads(storage.read_bytes(join(out, "step-000001", "eval.json")))
        assert result["checkpoint"] == ckpt
        m = result["metrics"]
        assert m["tasks"] == 5 and m["samples"] == 10
        assert sorted(k for k in m if k.startswith("pass_rate_level_")) == [f"pass_rate_level_{n}" for n in range(5)]
        assert json.loads(storage.read_bytes(f"{out}/status.json"))["metrics"] == m
        assert not storage.exists(f"{root}/sampling/stats.json")
        assert storage.list_dirs(f"{out}/ledger"), "the eval's samples ship with the ledger"
        # a retry on a new machine (empty work dir) finds the committed result in S3
        shutil.rmtree(tmp_path / "work")
        r2 = subprocess.run(cmd, cwd=TRAINER, capture_output=True, text=True, timeout=120)
        assert r2.returncode == 0, r2.stderr[-3000:]
        assert "reported again" in r2.stderr
        assert json.loads(storage.read_bytes(f"{out}/status.json"))["metrics"] == m
    finally:
        storage.delete_prefix(root)
