"""Stage metrics where users look: TensorBoard event files, kept in storage next to the stage's checkpoints
(`<output_prefix>/tensorboard/`), under the names dashboards know (verl's where verl has one: the contract's
TRACKED_NAMES_*; every other metric as `trainflow/NAME`).

Resume without duplicate steps: a resumed attempt first brings back the event files the stage has in storage,
then opens its writer with `purge_step` = the resumed step + 1. TensorBoard's readers drop every event of an
earlier file at or after a purge step, so the steps a crashed attempt logged after its last commit (and that the
resumed attempt logs again) appear once. Files are uploaded just before every checkpoint commit and at the end:
a crash between the upload and the commit leaves steps that the purge removes, never a gap in the curve.
"""

from __future__ import annotations

import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from .contract import TRACKED_NAMES_LM, TRACKED_NAMES_ROLLOUT, JobSpec
from .storage import Storage, join

if TYPE_CHECKING:
    from torch.utils.tensorboard import SummaryWriter

TENSORBOARD_DIR = "tensorboard"


class Log(Protocol):
    def __call__(self, msg: str) -> None: ...


def tracked_name(kind: str, metric: str) -> str:
    """The dashboard name of a stage metric (one table per family of stages, in the contract)."""
    names = TRACKED_NAMES_LM if kind in ("midtrain", "sft") else TRACKED_NAMES_ROLLOUT
    return names.get(metric, f"trainflow/{metric}")


class Tracker:
    """One stage attempt's tracking. `log` per step; `sync` before each checkpoint commit; `close` at the end."""

    def __init__(self, spec: JobSpec, storage: Storage, *, resumed_step: int | None, enabled: bool, log: Log):
        self.kind = spec.stage.kind
        self.storage, self.log_fn = storage, log
        self.remote = join(spec.output_prefix, TENSORBOARD_DIR)
        self.local = Path(spec.work_dir) / TENSORBOARD_DIR / spec.stage.name
        self.writer: SummaryWriter | None = None
        if not (enabled and spec.tracking.tensorboard):
            return
        from torch.utils.tensorboard import SummaryWriter

        shutil.rmtree(self.local, ignore_errors=True)  # storage is the truth: start from what it holds
        self.local.mkdir(parents=True)
        if resumed_step is not None:
            self._restore()
        purge = resumed_step + 1 if resumed_step is not None else None
        self.writer = SummaryWriter(log_dir=str(self.local), purge_step=purge, flush_secs=30)

    def _restore(self) -> None:
        for rel in self.storage.list_files(self.remote):
            if "/" not in rel:
                self.storage.download_file(join(self.remote, rel), self.local / rel)

    def log(self, step: int, metrics: Mapping[str, float]) -> None:
        if self.writer is None:
            return
        for name, value in metrics.items():
            self.writer.add_scalar(tracked_name(self.kind, name), float(value), global_step=step)

    def sync(self) -> None:
        """Flushes and uploads the event files (all of them: an earlier attempt's too, restored at start)."""
        if self.writer is None:
            return
        self.writer.flush()
        for f in sorted(self.local.iterdir()):
            if f.is_file():
                self.storage.upload_file(f, join(self.remote, f.name))

    def close(self) -> None:
        if self.writer is None:
            return
        self.sync()
        self.writer.close()
        self.writer = None


__all__ = ["TENSORBOARD_DIR", "Tracker", "tracked_name"]
