"""Child processes of an RL/RFT job that never outlive it.

Every child gets PR_SET_PDEATHSIG (Linux): when the job dies — even by kill -9 — the kernel sends the child
SIGTERM, so a crashed trainer leaves no inference server or data plane running. On a normal exit the job
stops them itself (SIGTERM, then SIGKILL after a grace period).
"""

from __future__ import annotations

import ctypes
import json
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from typing import IO, Any

PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except OSError:  # not glibc Linux: the job's own cleanup still stops children on a clean exit
        pass


class Child:
    """A subprocess whose stdout lines with a given prefix are parsed as JSON and queued; others are echoed
    to our stderr (so its logs reach the job's log)."""

    def __init__(
        self,
        name: str,
        argv: list[str],
        prefix: str,
        cwd: str | None = None,
        env: dict | None = None,
        stdin: bool = False,
    ):
        self.name, self.prefix = name, prefix
        self.proc = subprocess.Popen(
            argv,
            cwd=cwd,
            env=env,
            stdout=subprocess.PIPE,
            text=True,
            bufsize=1,
            encoding="utf-8",
            errors="replace",
            stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
            preexec_fn=_die_with_parent,
        )
        self.messages: queue.Queue = queue.Queue()
        self._reader = threading.Thread(target=self._read, args=(self.proc.stdout,), daemon=True)
        self._reader.start()

    def _read(self, out: IO[str]) -> None:
        try:
            for line in out:
                if line.startswith(self.prefix + " "):
                    self.messages.put(json.loads(line[len(self.prefix) + 1 :]))
                else:
                    sys.stderr.write(f"[{self.name}] {line}")
        except Exception as e:  # noqa: BLE001 - a bad line must fail the waiting caller, not hang it
            self.messages.put(RuntimeError(f"{self.name}: unreadable output: {type(e).__name__}: {e}"))
            return
        self.messages.put(None)  # end of output: the child exited

    def next_message(self, timeout: float, should_stop: Callable[[], bool] = lambda: False) -> dict[str, Any]:
        """The next JSON message; raises if the child exits first or nothing comes within `timeout` s."""
        deadline = time.monotonic() + timeout
        while True:
            if should_stop():
                raise InterruptedError(self.name)
            try:
                msg = self.messages.get(timeout=0.2)
            except queue.Empty:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{self.name}: no message within {timeout:.0f}s") from None
                continue
            if isinstance(msg, Exception):
                raise msg
            if msg is None:
                code = self.proc.wait()
                raise RuntimeError(f"{self.name} exited with code {code}")
            return msg

    def send(self, obj: dict) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(obj) + "\n")
        self.proc.stdin.flush()

    def stop(self, grace: float = 5.0) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(grace)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc.stdin:
            try:
                self.proc.stdin.close()
            except OSError:
                pass
