"""The job's status object: written to `status_uri` and printed as `TRAINFLOW_STATUS {json}` at start,
every `interval` seconds (a background thread, so a slow step cannot starve it), after each checkpoint and
at exit. The activity reads it (S3 or stdout) for heartbeats; S3 remains the source of truth."""

from __future__ import annotations

import os
import sys
import threading
import time
from typing import Any

from .contract import STATUS_LINE_PREFIX, JobStatus
from .storage import Storage


def iso_now() -> str:
    t = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t % 1 * 1000):03d}Z"


class StatusReporter:
    """The job's status, typed by the contract's JobStatus: every update is validated, so a field the activity
    cannot read never leaves the job."""

    def __init__(
        self,
        storage: Storage,
        uri: str | None,
        attempt: int,
        total_steps: int = 0,
        interval: float = 15.0,
        enabled: bool = True,
    ) -> None:
        self.storage, self.uri, self.enabled = storage, uri, enabled
        self.interval = interval
        self._lock = threading.Lock()
        self._status = JobStatus(
            state="running",
            step=0,
            total_steps=total_steps,
            metrics={},
            last_checkpoint=None,
            last_checkpoint_step=None,
            resumed_from=None,  # the committed checkpoint this attempt resumed from
            attempt=attempt,
            pid=os.getpid(),
            updated_at=iso_now(),
        )
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def update(self, write: bool = False, **fields: Any) -> None:
        with self._lock:
            self._status = JobStatus.model_validate({**self._status.model_dump(), **fields})
        if write:
            self.write()

    def snapshot(self) -> JobStatus:
        with self._lock:
            return self._status.model_copy(deep=True)

    def write(self) -> None:
        if not self.enabled:
            return
        with self._lock:
            self._status = self._status.model_copy(update={"updated_at": iso_now()})
            # `reason` is optional (absent, never null) in the contract
            line = self._status.model_dump_json(exclude={"reason"} if self._status.reason is None else None)
        print(f"{STATUS_LINE_PREFIX}{line}", flush=True)
        if self.uri:
            try:
                self.storage.write_bytes(self.uri, line.encode())
            except Exception as e:  # noqa: BLE001 - status is a hint; a failed write must not kill training
                print(f"trainflow: could not write status to {self.uri}: {e}", file=sys.stderr, flush=True)

    def start(self) -> None:
        self.write()
        if self.enabled and self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="trainflow-status", daemon=True)
            self._thread.start()

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self.write()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
