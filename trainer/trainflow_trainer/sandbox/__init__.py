"""Run untrusted code with no network, a private work folder and CPU/memory/process/time limits.

See `confinement.py` for exactly what confines a run (bubblewrap when it works, else a fallback)."""

from .confinement import SandboxUnavailable
from .limits import Limits
from .runner import RunResult, Sandbox, Workspace

__all__ = ["Limits", "RunResult", "Sandbox", "SandboxUnavailable", "Workspace"]
