"""The RL stage's ledger on a new machine: the trajectory ledger ships to S3 (<stage output prefix>/ledger/
<generation>/segments/) and the checkpoint records the generation next to its cursor. A retry whose work dir is
gone restores that generation from S3, so the groups the lost machine produced after the committed cursor are
trained (once), and none at or before the cursor is offered again. Also: rollout.session_idle_timeout (resolved
to milliseconds) reaches the data-plane driver in seconds. Needs the local stack's MinIO (`make dev-up`); fails
loudly without it."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

# fixtures: the local stack's MinIO (failing loudly when it is down), the demo tokenizer
from conftest import BUCKET, ENDPOINT, job_env
from specs import job_spec
from test_rl import descendants, kill9_and_reap, rl_model, rl_stage

from trainflow_trainer.storage import Storage, join

TRAINER = Path(__file__).resolve().parents[1]


def shipped_groups(storage: Storage, ledger_prefix: str) -> list[tuple[int, dict]]:
    """(seq, group record) of every group the S3 copy of a ledger generation holds, in seq order."""
    out = []
    for name in storage.list_files(join(ledger_prefix, "segments")):
        for ln in storage.read_bytes(join(ledger_prefix, "segments", name)).split(b"\n")[:-1]:
            e = json.loads(ln[17:])
            if e["record"].get("kind") == "group":
                out.append((e["seq"], e["record"]))
    return sorted(out, key=lambda x: x[0])


def test_rl_retry_on_a_new_machine_trains_the_lost_machines_shipped_groups_after_the_cursor(
    tmp_path, tokenizer, storage
):
    root = f"s3://{BUCKET}/tests/rl-ledger-{uuid.uuid4().hex[:10]}"
    out, work = f"{root}/rl", tmp_path / "work"
    store = {"endpoint": ENDPOINT, "region": "us-east-1", "force_path_style": True}
    stage = rl_stage(steps=4, session_idle_timeout="10m")
    spec = job_spec(stage, rl_model(tokenizer), out, work, storage=store, stage_index=4)
    spec_file = tmp_path / "spec.json"
    spec_file.write_text(json.dumps(spec))
    cmd = [sys.executable, "-m", "trainflow_trainer.job", "--spec", str(spec_file)]
    try:
        # machine 1: killed once step 2 is committed and step 3 trained (its batch was in S3 before it was offered)
        job = subprocess.Popen(
            cmd, cwd=TRAINER, env=job_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        assert job.stdout is not None
        children: set[int] = set()
        deadline, log = time.monotonic() + 150, []
        for line in job.stdout:
            log.append(line)
            children |= descendants(job.pid)
            if line.startswith("trainflow: rl step 3/4"):
                break
            assert time.monotonic() < deadline, "machine 1 did not reach step 3:\n" + "".join(log[-30:])
        else:
            pytest.fail("machine 1 exited before step 3:\n" + "".join(log[-30:]))
        kill9_and_reap(job, children)
        driver_spec = json.loads((work / "driver-rl.json").read_text())
        assert driver_spec["session_idle_timeout_s"] == 600  # rollout.session_idle_timeout reached the driver

        ckpt2 = json.loads(storage.read_bytes(join(out, "step-000002", "trainer_state.json")))
        cursor, generation = ckpt2["cursor"], ckpt2["ledger_generation"]
        assert generation == (work / "ledger" / "generation").read_text().strip()
        shipped = shipped_groups(storage, join(out, "ledger", generation))
        after = [g["group_id"] for seq, g in shipped if seq > cursor and not g.get("filtered")]
        upto = {g["group_id"] for seq, g in shipped if seq <= cursor}
        assert len(after) >= 2, (
            f"machine 1 shipped {len(after)} groups after cursor {cursor}: expected its step-3 batch"
        )

        # machine 2: an empty work dir
        shutil.rmtree(work)
        r = subprocess.run(cmd, cwd=TRAINER, env=job_env(), capture_output=True, text=True, timeout=240)
        assert r.returncode == 0, r.stderr[-3000:]
        assert "restored from S3" in r.stderr, r.stderr[-3000:]
        status = [json.loads(ln.split(" ", 1)[1]) for ln in r.stdout.splitlines() if ln.startswith("TRAINFLOW_STATUS")]
        assert status[-1]["resumed_from"] == {"uri": join(out, "step-000002"), "step": 2}
        assert "a new ledger" not in r.stderr
        assert (work / "ledger" / "generation").read_text().strip() == generation  # continues that generation
        final = json.loads(storage.read_bytes(join(out, "step-000004", "trainer_state.json")))
        hist = final["history"]
        assert [h["step"] for h in hist] == [1, 2, 3, 4] and hist[:2] == ckpt2["history"]
        # the first batch after resume: the lost machine's first two groups after the cursor, in ledger order
        first = hist[2]
        assert sorted(first["groups"] + first["dropped"]) == sorted(after[:2])
        resumed = [g for h in hist[2:] for g in h["groups"] + h["dropped"]]
        assert not upto & set(resumed), "a group at or before the committed cursor was offered again"
        assert len(resumed) == len(set(resumed)) == 4
        assert final["ledger_generation"] == generation and final["cursor"] > cursor
    finally:
        storage.delete_prefix(root)
