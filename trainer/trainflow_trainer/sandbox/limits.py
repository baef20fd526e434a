"""Resource limits of one sandboxed run, and how to read them from a stage's `rollout.sandbox` block."""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from typing import Any

_SIZE_UNITS = {
    "": 1,
    "b": 1,
    "k": 10**3,
    "kb": 10**3,
    "m": 10**6,
    "mb": 10**6,
    "g": 10**9,
    "gb": 10**9,
    "ki": 2**10,
    "kib": 2**10,
    "mi": 2**20,
    "mib": 2**20,
    "gi": 2**30,
    "gib": 2**30,
}
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


@dataclass(frozen=True)
class Limits:
    """What one run may use. Every limit is enforced by the kernel (rlimits, namespaces) except `timeout_s`,
    which the host enforces by killing the whole sandbox."""

    timeout_s: float = 10.0  # wall clock; the sandbox is killed after it
    memory_bytes: int = 512 * 2**20  # RLIMIT_AS of every process in the sandbox
    max_processes: int = 32  # RLIMIT_NPROC of the run's private uid (contains fork bombs)
    cpu_s: int | None = None  # RLIMIT_CPU per process; default: the timeout rounded up, plus 1
    file_size_bytes: int = 64 * 2**20  # RLIMIT_FSIZE: largest file a process may write
    open_files: int = 256  # RLIMIT_NOFILE
    output_bytes: int = 1 * 2**20  # stdout / stderr kept per stream (the rest is read and dropped)
    tmp_bytes: int = 64 * 2**20  # size of the sandbox's private /tmp (a tmpfs)

    def __post_init__(self) -> None:
        for name in ("timeout_s", "memory_bytes", "max_processes", "file_size_bytes", "open_files", "output_bytes"):
            if getattr(self, name) <= 0:
                raise ValueError(f"sandbox limit {name} must be positive, got {getattr(self, name)!r}")

    @property
    def effective_cpu_s(self) -> int:
        return self.cpu_s if self.cpu_s is not None else int(self.timeout_s) + 1

    def with_(self, **changes: Any) -> Limits:
        return replace(self, **changes)

    @classmethod
    def from_config(cls, block: dict[str, Any] | None) -> Limits:
        """From the config's `rollout.sandbox` block: {timeout, memory, max_processes}. The resolved config
        holds durations in milliseconds and sizes in bytes; strings such as "10s" / "512Mi" are read too."""
        block = block or {}
        unknown = set(block) - {"timeout", "memory", "max_processes"}
        if unknown:
            raise ValueError(
                f"rollout.sandbox: unknown field(s) {sorted(unknown)} (known: timeout, memory, max_processes)"
            )
        limits = cls()  # the defaults live in the fields above; each given key replaces one
        if "timeout" in block:
            limits = replace(limits, timeout_s=duration_s(block["timeout"], "rollout.sandbox.timeout"))
        if "memory" in block:
            limits = replace(limits, memory_bytes=_size_bytes(block["memory"], "rollout.sandbox.memory"))
        if "max_processes" in block:
            limits = replace(limits, max_processes=int(block["max_processes"]))
        return limits


def duration_s(v: object, field: str) -> float:
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        return v / 1000.0  # the resolved config's durations are milliseconds
    m = re.fullmatch(r"\s*([0-9.]+)\s*(ms|s|m|h)\s*", str(v))
    if not m:
        raise ValueError(f"{field}: expected a duration such as 10s or 500ms, got {v!r}")
    return float(m.group(1)) * _DURATION_UNITS[m.group(2)]


def _size_bytes(v: object, field: str) -> int:
    if isinstance(v, int) and not isinstance(v, bool):
        return v
    m = re.fullmatch(r"\s*([0-9.]+)\s*([a-zA-Z]*)\s*", str(v))
    if not m or m.group(2).lower() not in _SIZE_UNITS:
        raise ValueError(f"{field}: expected a size such as 512Mi or 1G, got {v!r}")
    return int(float(m.group(1)) * _SIZE_UNITS[m.group(2).lower()])
