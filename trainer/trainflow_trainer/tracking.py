"""Stage metrics where users look, under the names dashboards know (verl's where verl has one: the contract's
TRACKED_NAMES_*; every other metric as `trainflow/NAME`):

- TensorBoard (default): event files kept in storage next to the stage's checkpoints (`<output_prefix>/tensorboard/`).
- MLflow (`tracking.mlflow`): one run per pipeline run, one child run per stage (tag `mlflow.parentRunId`).
- Weights & Biases (`tracking.wandb`): one run per stage, grouped by pipeline run; offline mode keeps the run
  folder in storage (`<output_prefix>/wandb/`) for `wandb sync`.

A resumed attempt continues the same curves with no step twice. TensorBoard: the attempt restores the event
files from storage and opens its writer with `purge_step` = the resumed step + 1, so readers drop what a crashed
attempt logged after its last commit. MLflow: the child run is found again by its tags, and steps it already
holds are not logged again (on CPU a resumed run recomputes them bitwise, so nothing is lost). W&B: the same run
id is resumed; W&B itself keeps steps monotonic. Event files are uploaded just before every checkpoint commit and
at the end: a crash between upload and commit leaves steps the purge removes, never a gap.
"""

from __future__ import annotations

import re
import shutil
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, Protocol

from .contract import TRACKED_NAMES_LM, TRACKED_NAMES_ROLLOUT, JobSpec
from .storage import Storage, join

TENSORBOARD_DIR = "tensorboard"
WANDB_DIR = "wandb"


def tracked_name(kind: str, metric: str) -> str:
    """The dashboard name of a stage metric (one table per family of stages, in the contract)."""
    names = TRACKED_NAMES_LM if kind in ("midtrain", "sft") else TRACKED_NAMES_ROLLOUT
    return names.get(metric, f"trainflow/{metric}")


class Sink(Protocol):
    def log(self, step: int, metrics: Mapping[str, float]) -> None: ...
    def sync(self) -> None: ...
    def close(self) -> None: ...


def upload_folder(storage: Storage, local: Path, remote: str) -> None:
    for f in sorted(local.rglob("*")):
        if f.is_file():
            storage.upload_file(f, join(remote, str(f.relative_to(local))))


def download_folder(storage: Storage, remote: str, local: Path) -> None:
    for rel in storage.list_files(remote):
        storage.download_file(join(remote, rel), local / rel)


class TensorBoardSink:
    def __init__(self, spec: JobSpec, storage: Storage, resumed_step: int | None):
        from torch.utils.tensorboard import SummaryWriter

        self.storage, self.remote = storage, join(spec.output_prefix, TENSORBOARD_DIR)
        self.local = Path(spec.work_dir) / TENSORBOARD_DIR / spec.stage.name
        shutil.rmtree(self.local, ignore_errors=True)  # storage is the truth: start from what it holds
        self.local.mkdir(parents=True)
        if resumed_step is not None:
            download_folder(storage, self.remote, self.local)
        purge = resumed_step + 1 if resumed_step is not None else None
        self.writer = SummaryWriter(log_dir=str(self.local), purge_step=purge, flush_secs=30)

    def log(self, step: int, metrics: Mapping[str, float]) -> None:
        for name, value in metrics.items():
            self.writer.add_scalar(name, value, global_step=step)

    def sync(self) -> None:
        self.writer.flush()
        upload_folder(self.storage, self.local, self.remote)

    def close(self) -> None:
        self.sync()
        self.writer.close()


class MlflowSink:
    """The pipeline run and the stage's child run, found by their tags (so every attempt logs to the same ones)."""

    def __init__(self, spec: JobSpec, tracking_uri: str, experiment: str):
        from mlflow.tracking import MlflowClient

        self.client = MlflowClient(tracking_uri=tracking_uri)
        found = self.client.get_experiment_by_name(experiment)
        exp = found.experiment_id if found is not None else self.client.create_experiment(experiment)
        tags = {"trainflow.pipeline_id": spec.pipeline_id, "trainflow.pipeline": spec.pipeline_name}
        parent = self._run(exp, {**tags, "trainflow.role": "pipeline"}, spec.pipeline_id)
        stage_tags = {**tags, "trainflow.role": "stage", "trainflow.stage": spec.stage.name}
        self.run_id = self._run(exp, stage_tags, spec.stage.name, extra={"mlflow.parentRunId": parent})
        self.client.set_tag(self.run_id, "trainflow.attempt", str(spec.attempt))
        self.last_step = self._last_step()

    def _run(self, exp: str, tags: dict[str, str], name: str, extra: dict[str, str] | None = None) -> str:
        query = " and ".join(f"tags.`{k}` = '{v}'" for k, v in tags.items())
        runs = self.client.search_runs([exp], filter_string=query, max_results=1)
        if runs:
            return str(runs[0].info.run_id)
        return str(self.client.create_run(exp, run_name=name, tags={**tags, **(extra or {})}).info.run_id)

    def _last_step(self) -> int:
        keys = list(self.client.get_run(self.run_id).data.metrics)
        return max((m.step for m in self.client.get_metric_history(self.run_id, keys[0])), default=0) if keys else 0

    def log(self, step: int, metrics: Mapping[str, float]) -> None:
        if step <= self.last_step:
            return
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self.client.log_batch(self.run_id, metrics=[Metric(k, v, now, step) for k, v in metrics.items()])
        self.last_step = step

    def sync(self) -> None:
        return None

    def close(self) -> None:
        self.client.set_terminated(self.run_id, "FINISHED")


class WandbSink:
    def __init__(
        self, spec: JobSpec, storage: Storage, project: str, entity: str | None, mode: Literal["offline", "online"]
    ):
        import wandb

        self.storage, self.mode = storage, mode
        self.remote = join(spec.output_prefix, WANDB_DIR)
        self.local = Path(spec.work_dir) / WANDB_DIR / spec.stage.name
        self.local.mkdir(parents=True, exist_ok=True)
        run_id = re.sub(r"[^A-Za-z0-9_-]", "-", f"{spec.pipeline_id}-{spec.stage.name}")
        self.run: Any = wandb.init(
            project=project,
            entity=entity,
            mode=mode,
            dir=str(self.local),
            id=run_id,
            name=spec.stage.name,
            group=spec.pipeline_id,
            job_type=spec.stage.kind,
            resume="allow",
            config={"stage": spec.stage.model_dump(mode="json"), "pipeline": spec.pipeline_name},
            settings=wandb.Settings(silent=True, console="off", x_disable_stats=True),
        )

    def log(self, step: int, metrics: Mapping[str, float]) -> None:
        self.run.log(dict(metrics), step=step)

    def sync(self) -> None:
        if self.mode == "offline":
            upload_folder(self.storage, self.local, self.remote)

    def close(self) -> None:
        import wandb

        self.run.finish()
        wandb.teardown()  # the service process writes the run's log out only as it stops (offline mode)
        self.sync()


class Tracker:
    """One stage attempt's tracking: `log` per step, `sync` before each checkpoint commit, `close` at the end.
    Only the main rank tracks (`enabled`)."""

    def __init__(self, spec: JobSpec, storage: Storage, *, resumed_step: int | None, enabled: bool):
        self.kind = spec.stage.kind
        self.sinks: list[Sink] = []
        if not enabled:
            return
        t = spec.tracking
        if t.tensorboard:
            self.sinks.append(TensorBoardSink(spec, storage, resumed_step))
        if t.mlflow is not None:
            self.sinks.append(MlflowSink(spec, t.mlflow.tracking_uri, t.mlflow.experiment))
        if t.wandb is not None:
            self.sinks.append(WandbSink(spec, storage, t.wandb.project, t.wandb.entity, t.wandb.mode))

    def log(self, step: int, metrics: Mapping[str, float]) -> None:
        named = {tracked_name(self.kind, k): float(v) for k, v in metrics.items()}
        for sink in self.sinks:
            sink.log(step, named)

    def sync(self) -> None:
        for sink in self.sinks:
            sink.sync()

    def close(self) -> None:
        for sink in self.sinks:
            sink.close()
        self.sinks = []


__all__ = ["TENSORBOARD_DIR", "WANDB_DIR", "Tracker", "tracked_name"]
