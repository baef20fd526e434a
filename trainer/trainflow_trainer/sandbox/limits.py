"""Resource limits of one sandboxed run, and how to read them from a stage's `rollout.sandbox` block."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..contract.models import Sandbox


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
    def from_config(cls, block: Sandbox) -> Limits:
        """From the resolved `rollout.sandbox` block (its timeout in milliseconds). Memory and process limits keep
        the defaults above: the schema refuses them in a config until they reach the agent's sandbox."""
        return cls(timeout_s=block.timeout / 1000)
