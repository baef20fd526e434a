"""Run an untrusted command or Python program in a sandbox and return what it did.

    sb = Sandbox()                                   # bwrap when it works here, else the fallback
    r = sb.run_python("print(6 * 7)")                # RunResult(stdout='42\n', exit_code=0, ...)
    r = sb.run(["sh", "-c", "ls"], files={"a.txt": "hi"})

Each run gets a fresh private work folder (its cwd; `files` are written there first) that is deleted
afterwards, a fresh private uid (when the host is root), and the limits of `Limits`. On a timeout the host
SIGKILLs the sandbox's process group and then every process of the run's uid, so a run never leaves a
process behind, however it forked or daemonised.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from . import confinement as cf
from .limits import Limits

CONFINEMENTS = ("auto", "bwrap", "fallback")


@dataclass
class RunResult:
    stdout: str
    stderr: str
    exit_code: int | None     # the command's exit status; None when it was killed before it exited
    timed_out: bool           # the wall-clock limit was hit and the sandbox killed
    killed: bool              # ended by a signal (our SIGKILL on timeout, SIGXCPU at the CPU limit, ...)
    signal: int | None        # that signal, when known
    duration_s: float
    confinement: str          # "bwrap" or "fallback"
    stdout_truncated: bool = False
    stderr_truncated: bool = False
    uid: int | None = None    # the private uid the run had (None when the host is not root)

    @property
    def ok(self) -> bool:
        return self.exit_code == 0 and not self.timed_out and not self.killed

    def to_dict(self) -> dict:
        return asdict(self)


class Sandbox:
    def __init__(self, limits: Limits | None = None, confinement: str = "auto", ro_binds: tuple[str, ...] = (),
                 work_root: str | None = None):
        """ro_binds: extra host paths visible read-only (e.g. a virtualenv whose packages programs import).
        work_root: where the private work folders are made (default: the system temp dir)."""
        if confinement not in CONFINEMENTS:
            raise ValueError(f"sandbox confinement must be one of {CONFINEMENTS}, got {confinement!r}")
        ok, why = cf.bwrap_works() if confinement in ("auto", "bwrap") else (False, "fallback requested")
        if confinement == "bwrap" and not ok:
            raise cf.SandboxUnavailable(why)
        self.confinement = "bwrap" if ok else "fallback"
        self.why_not_bwrap = None if ok else why
        self.limits = limits or Limits()
        self.ro_binds = tuple(os.path.realpath(p) for p in ro_binds)
        self.work_root = work_root
        self.python, python_binds = cf.sandbox_python()
        self.ro_binds = tuple(dict.fromkeys((*python_binds, *self.ro_binds)))

    def describe(self) -> str:
        if self.confinement == "bwrap":
            return ("bwrap: user/pid/net/ipc/uts/cgroup namespaces, read-only system, private /tmp and work folder; "
                    "rlimits AS/NPROC/CPU/FSIZE/NOFILE; private uid" + ("" if cf.is_root() else " (not root: own uid)"))
        net = "unshare --user --net" if cf.unshare_net_works() else "NO network namespace"
        return (f"fallback ({self.why_not_bwrap}): {net}; Python audit hook against sockets and outside writes; "
                "rlimits AS/NPROC/CPU/FSIZE/NOFILE; private cwd; process-group and uid kill on timeout")

    # ---------------------------------------------------------------------------------------------------------

    def run_python(self, code: str, files: dict[str, str | bytes] | None = None, stdin: str | bytes | None = None,
                   limits: Limits | None = None, args: list[str] | None = None) -> RunResult:
        """Runs `code` as `main.py` in the work folder with the sandbox's Python (isolated mode: no user site,
        no PYTHON* variables)."""
        files = {**(files or {}), "main.py": code}
        if self.confinement == "bwrap":
            argv = [self.python, "-I", "-B", "main.py", *(args or [])]
        else:
            files["_sandbox_boot.py"] = cf.AUDIT_BOOT
            argv = [self.python, "-I", "-B", "_sandbox_boot.py", "main.py", *(args or [])]
        return self.run(argv, files=files, stdin=stdin, limits=limits)

    def run(self, argv: list[str], files: dict[str, str | bytes] | None = None, stdin: str | bytes | None = None,
            limits: Limits | None = None) -> RunResult:
        limits = limits or self.limits
        root = cf.is_root()
        uid = cf.allocate_uid() if root else None
        host_tmp = tempfile.mkdtemp(prefix="trainflow-sbx-", dir=self.work_root)
        work = os.path.join(host_tmp, "work")
        os.chmod(host_tmp, 0o711)  # the run's uid may pass through (to its work folder), not list or read
        try:
            os.mkdir(work, 0o700)
            for rel, content in (files or {}).items():
                path = Path(work, rel)
                if not path.resolve().is_relative_to(Path(work).resolve()):
                    raise ValueError(f"sandbox file {rel!r} would land outside the work folder")
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(content.encode() if isinstance(content, str) else content)
            if uid is not None:
                for dirpath, dirnames, filenames in os.walk(work):
                    for name in [dirpath, *(os.path.join(dirpath, n) for n in dirnames + filenames)]:
                        os.chown(name, uid, uid)
            stdin_path = os.path.join(host_tmp, "stdin")
            Path(stdin_path).write_bytes(stdin.encode() if isinstance(stdin, str) else (stdin or b""))
            result = self._launch(argv, work, stdin_path, limits, uid)  # kills the uid's processes itself
            return result
        except BaseException:
            if uid is not None:
                cf.kill_uid(uid)  # nothing of the run may outlive it, even when launching failed half-way
            raise
        finally:
            shutil.rmtree(host_tmp, ignore_errors=True)

    # ---------------------------------------------------------------------------------------------------------

    def _launch(self, argv: list[str], work: str, stdin_path: str, limits: Limits, uid: int | None) -> RunResult:
        # A private uid makes NPROC a per-run limit; bwrap's own two processes are added. Without root the
        # count is the user's, so the limit is set above what the user already runs.
        nproc = limits.max_processes + 2 + (0 if uid is not None else cf.count_processes_of_current_user())
        env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8", "PYTHONHASHSEED": "0",
               "PYTHONDONTWRITEBYTECODE": "1"}
        if self.confinement == "bwrap":
            env["HOME"] = cf.SANDBOX_DIR
            cmd = cf.prlimit_argv(limits, nproc) + cf.bwrap_argv(work, limits, self.ro_binds, env) + argv
            popen_env, cwd = {"PATH": "/usr/bin:/bin"}, "/"
        else:
            env["HOME"] = env["TMPDIR"] = work
            unshare = ["unshare", "--user", "--net", "--"] if cf.unshare_net_works() else []
            cmd = cf.prlimit_argv(limits, nproc) + unshare + argv
            popen_env, cwd = env, work
        ids = dict(user=uid, group=uid, extra_groups=[]) if uid is not None else {}
        t0 = time.monotonic()
        with open(stdin_path, "rb") as fin:
            proc = subprocess.Popen(cmd, stdin=fin, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=cwd,
                                    env=popen_env, start_new_session=True, close_fds=True, **ids)
        out, err = _Drain(proc.stdout, limits.output_bytes), _Drain(proc.stderr, limits.output_bytes)
        timed_out = False
        try:
            proc.wait(timeout=limits.timeout_s)
        except subprocess.TimeoutExpired:
            timed_out = True
        finally:
            _kill_group(proc.pid)
            if uid is not None:
                cf.kill_uid(uid)
            proc.wait()
        duration = time.monotonic() - t0
        out.join(), err.join()
        rc = proc.returncode
        sig = None
        if rc < 0:
            sig = -rc
        elif self.confinement == "bwrap" and rc > 128 and rc - 128 < signal.NSIG:
            sig = rc - 128  # bwrap's init reports a signalled command as 128 + signal
        killed = timed_out or sig is not None
        return RunResult(stdout=out.text(), stderr=err.text(), exit_code=None if (timed_out or rc < 0) else rc,
                         timed_out=timed_out, killed=killed, signal=signal.SIGKILL if timed_out else sig,
                         duration_s=duration, confinement=self.confinement,
                         stdout_truncated=out.truncated, stderr_truncated=err.truncated, uid=uid)


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


class _Drain:
    """Reads a pipe to its end in a thread, keeping the first `limit` bytes (a chatty program can neither
    block on a full pipe nor fill the host's memory)."""

    def __init__(self, pipe, limit: int):
        self.pipe, self.limit = pipe, limit
        self.buf = bytearray()
        self.truncated = False
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        with self.pipe:
            while chunk := self.pipe.read1(65536):
                room = self.limit - len(self.buf)
                if room > 0:
                    self.buf += chunk[:room]
                if len(chunk) > max(room, 0):
                    self.truncated = True

    def join(self):
        self.thread.join(timeout=5.0)  # every writer is dead by now; never hang on a leaked descriptor

    def text(self) -> str:
        return self.buf.decode("utf-8", errors="replace")
