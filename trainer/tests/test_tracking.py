"""Tracking: TensorBoard event files in storage under dashboard names; a resumed attempt continues the same
curves with no duplicate steps, as TensorBoard's own reader (the `tensorboard` package) sees them."""

from __future__ import annotations

import json
import subprocess
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
        ["node", "bin/trainflow.js", "validate", "configs/demo.yaml", "--json"],
        cwd=REPO,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return json.loads(out)


def spec_for(config: dict, stage: str, tmp: Path, tensorboard: bool = True) -> JobSpec:
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
            "tracking": {**config["tracking"], "tensorboard": tensorboard},
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
    first = Tracker(spec, storage, resumed_step=None, enabled=True, log=print)
    for step in range(1, 7):
        first.log(step, {"loss": 10.0 + step})
    first.sync()  # uploaded before a commit at step 6 that never happened: the job died
    del first

    # the retry resumes from the checkpoint of step 4, on a machine whose work folder is gone
    second = Tracker(spec, storage, resumed_step=4, enabled=True, log=print)
    for step in range(5, 9):
        second.log(step, {"loss": 100.0 + step})
    second.close()

    remote = Path(spec.output_prefix) / TENSORBOARD_DIR
    points = scalars(remote, "train/loss")
    assert [s for s, _ in points] == list(range(1, 9))
    assert [v for _, v in points] == [11.0, 12.0, 13.0, 14.0, 105.0, 106.0, 107.0, 108.0]


def test_tensorboard_false_writes_nothing(resolved_demo: dict, tmp_path: Path) -> None:
    spec = spec_for(resolved_demo, "sft", tmp_path, tensorboard=False)
    t = Tracker(spec, Storage(), resumed_step=None, enabled=True, log=print)
    t.log(1, {"loss": 1.0})
    t.close()
    assert not (Path(spec.output_prefix) / TENSORBOARD_DIR).exists()
