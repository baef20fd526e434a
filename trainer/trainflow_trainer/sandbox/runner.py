"""Run an untrusted command or Python program in a sandbox and return what it did.

    sb = Sandbox()                                   # bwrap when it works here, else the fallback
    r = sb.run_python("print(6 * 7)")                # RunResult(stdout='42\n', exit_code=0, ...)
    r = sb.run(["sh", "-c", "ls"], files={"a.txt": "hi"})

Each run gets a fresh private work folder (its cwd; `files` are written there first) that is deleted
afterwards — or, with `workspace=`, a folder kept across the runs of one agent episode — a fresh private
uid (when the host is root), and the limits of `Limits`. On a timeout the host
SIGKILLs the sandbox's process group and then every process of the run's uid, so a run never leaves a
process behind, however it forked or daemonised.
"""

from __future__ import annotations

import io
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO

from . import confinement as cf
from .limits import Limits

CONFINEMENTS = ("auto", "bwrap", "fallback")


@dataclass
class RunResult:
    stdout: str
    stderr: str
    exit_code: int | None  # the command's exit status; None when it was killed before it exited
    timed_out: bool  # the wall-clock limit was hit and the sandbox killed
    killed: bool  # ended by a signal (our SIGKILL on timeout, SIGXCPU at the CPU limit, ...)
    signal: int | None  # that signal, when known
    duration_s: float
    confinement: str  # "bwrap" or "fallback"
    stdout_truncated: bool = False
    stderr_truncated: bool = False
    uid: int | None = None  # the private uid the run had (None when the host is not root)

    @property
    def ok(self) -> bool:
        return self.exit_code == 0 and not self.timed_out and not self.killed

    def to_dict(self) -> dict:
        return asdict(self)


class Sandbox:
    def __init__(
        self,
        limits: Limits | None = None,
        confinement: str = "auto",
        ro_binds: tuple[str, ...] = (),
        work_root: str | None = None,
    ):
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
            return (
                "bwrap: user/pid/net/ipc/uts/cgroup namespaces, read-only system, private /tmp and work folder; "
                "rlimits AS/NPROC/CPU/FSIZE/NOFILE; private uid" + ("" if cf.is_root() else " (not root: own uid)")
            )
        net = "unshare --user --net" if cf.unshare_net_works() else "NO network namespace"
        return (
            f"fallback ({self.why_not_bwrap}): {net}; Python audit hook against sockets and outside writes; "
            "rlimits AS/NPROC/CPU/FSIZE/NOFILE; private cwd; process-group and uid kill on timeout"
        )

    # ---------------------------------------------------------------------------------------------------------

    def run_python(
        self,
        code: str,
        files: dict[str, str | bytes] | None = None,
        stdin: str | bytes | None = None,
        limits: Limits | None = None,
        args: list[str] | None = None,
        workspace: Workspace | None = None,
    ) -> RunResult:
        """Runs `code` as `main.py` in the work folder with the sandbox's Python (isolated mode: no user site,
        no PYTHON* variables)."""
        # A name of its own, so parallel runs in one workspace never overwrite each other's program.
        main = "main.py" if workspace is None else f".run-{uuid.uuid4().hex[:12]}.py"
        files = {**(files or {}), main: code}
        if self.confinement == "bwrap":
            argv = [self.python, "-I", "-B", main, *(args or [])]
        else:
            boot = "_sandbox_boot.py" if workspace is None else main[:-3] + "-boot.py"
            files[boot] = cf.AUDIT_BOOT
            argv = [self.python, "-I", "-B", boot, main, *(args or [])]
        try:
            return self.run(argv, files=files, stdin=stdin, limits=limits, workspace=workspace)
        finally:
            if workspace is not None:
                for name in files:
                    if name.startswith(".run-"):
                        workspace.remove(name)

    def workspace(self) -> Workspace:
        """A work folder that persists across runs (one agent episode's): what a run leaves there, the next
        run sees. Use as a context manager; it is deleted on exit."""
        return Workspace(self.work_root)

    def run(
        self,
        argv: list[str],
        files: dict[str, str | bytes] | None = None,
        stdin: str | bytes | None = None,
        limits: Limits | None = None,
        workspace: Workspace | None = None,
        env: dict[str, str] | None = None,
        binds: dict[str, str] | None = None,
    ) -> RunResult:
        """env: extra environment variables. binds: host path -> path inside the sandbox (bwrap only; the run's
        uid must be able to reach the host path): read-only, except a destination under /run (a socket folder)."""
        if binds and self.confinement != "bwrap":
            raise cf.SandboxUnavailable(f"binding host paths into the sandbox needs bwrap ({self.why_not_bwrap})")
        limits = limits or self.limits
        uid = cf.allocate_uid() if cf.is_root() else None
        own = workspace is None
        ws = workspace or Workspace(self.work_root)
        stdin_path = os.path.join(ws.host_dir, f"stdin-{uuid.uuid4().hex}")
        try:
            ws.write(files or {})
            Path(stdin_path).write_bytes(stdin.encode() if isinstance(stdin, str) else (stdin or b""))
            return self._launch(argv, ws.path, stdin_path, limits, uid, ws.gid, env or {}, binds or {})
        except BaseException:
            if uid is not None:
                cf.kill_uid(uid)  # nothing of the run may outlive it, even when launching failed half-way
            raise
        finally:
            if own:
                ws.close()
            else:
                Path(stdin_path).unlink(missing_ok=True)

    # ---------------------------------------------------------------------------------------------------------

    def _launch(
        self,
        argv: list[str],
        work: str,
        stdin_path: str,
        limits: Limits,
        uid: int | None,
        gid: int | None,
        extra_env: dict[str, str],
        binds: dict[str, str],
    ) -> RunResult:
        """Runs argv confined; kills every process of the run's uid before it returns."""
        return self._spawn(
            argv,
            work,
            stdin_path,
            limits,
            uid,
            gid,
            extra_env,
            tuple((src, dest, dest.startswith("/run/")) for src, dest in binds.items()),
        )

    def _spawn(
        self,
        argv: list[str],
        work: str,
        stdin_path: str,
        limits: Limits,
        uid: int | None,
        gid: int | None,
        extra_env: dict[str, str],
        binds: tuple[tuple[str, str, bool], ...],
    ) -> RunResult:
        # A private uid makes NPROC a per-run limit; bwrap's own two processes are added. Without root the
        # count is the user's, so the limit is set above what the user already runs.
        nproc = limits.max_processes + 2 + (0 if uid is not None else cf.count_processes_of_current_user())
        env = {
            "PATH": "/usr/local/bin:/usr/bin:/bin",
            "LANG": "C.UTF-8",
            "PYTHONHASHSEED": "0",
            "PYTHONDONTWRITEBYTECODE": "1",
        }
        if self.confinement == "bwrap":
            env["HOME"] = cf.SANDBOX_DIR
            env.update(extra_env)
            cmd = cf.prlimit_argv(limits, nproc) + cf.bwrap_argv(work, limits, self.ro_binds, env, binds) + argv
            popen_env, cwd = {"PATH": "/usr/bin:/bin"}, "/"
        else:
            env["HOME"] = env["TMPDIR"] = work
            env.update(extra_env)
            unshare = ["unshare", "--user", "--net", "--"] if cf.unshare_net_works() else []
            cmd = cf.prlimit_argv(limits, nproc) + unshare + argv
            popen_env, cwd = env, work
        ids = cf.run_as(uid, gid)
        t0 = time.monotonic()
        with open(stdin_path, "rb") as fin:
            proc = subprocess.Popen(
                cmd,
                stdin=fin,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                cwd=cwd,
                env=popen_env,
                start_new_session=True,
                close_fds=True,
                umask=0o007,
                **ids,
            )
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
        out.join()
        err.join()
        rc = proc.returncode
        sig = None
        if rc < 0:
            sig = -rc
        elif self.confinement == "bwrap" and rc > 128 and rc - 128 < signal.NSIG:
            sig = rc - 128  # bwrap's init reports a signalled command as 128 + signal
        killed = timed_out or sig is not None
        return RunResult(
            stdout=out.text(),
            stderr=err.text(),
            exit_code=None if (timed_out or rc < 0) else rc,
            timed_out=timed_out,
            killed=killed,
            signal=signal.SIGKILL if timed_out else sig,
            duration_s=duration,
            confinement=self.confinement,
            stdout_truncated=out.truncated,
            stderr_truncated=err.truncated,
            uid=uid,
        )


class Workspace:
    """A run's work folder on the host: HOST_DIR/work, bound at /sandbox (bwrap) or used as the cwd.

    Runs that share a workspace (the parallel tool calls of one episode) each have their own private uid, so
    access goes through a group: the folder belongs to a private gid of the workspace (setgid, mode 2770),
    every run has that gid as its group and a umask of 007, so what one run writes the others may read and
    change. Whatever a run leaves is untrusted: the host writes files only where they resolve inside the
    folder, never through a link, and never changes the ownership of what a run made."""

    def __init__(self, root: str | None = None):
        self.gid = cf.allocate_uid() if cf.is_root() else None
        self.host_dir = tempfile.mkdtemp(prefix="trainflow-sbx-", dir=root)
        os.chmod(self.host_dir, 0o711)  # a run may pass through to its work folder, not list or read this one
        self.path = os.path.join(self.host_dir, "work")
        self._mkdir(self.path)

    def _mkdir(self, path: str) -> None:
        os.mkdir(path, 0o700)
        if self.gid is not None:
            os.chown(path, 0, self.gid, follow_symlinks=False)
            os.chmod(path, 0o2770, follow_symlinks=False)

    def write(self, files: dict[str, str | bytes]) -> None:
        base = Path(self.path).resolve()
        for rel, content in files.items():
            path = Path(self.path, rel)
            if not path.resolve().is_relative_to(base) or path.is_symlink():
                raise ValueError(f"sandbox file {rel!r} would land outside the work folder")
            missing = [
                p for p in [*reversed(path.relative_to(self.path).parents)][1:] if not (Path(self.path) / p).exists()
            ]
            for p in missing:
                self._mkdir(str(Path(self.path) / p))
            if path.parent.resolve() != path.resolve().parent:
                raise ValueError(f"sandbox file {rel!r} would land outside the work folder")
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o660)
            with os.fdopen(fd, "wb") as f:
                if self.gid is not None:
                    os.fchown(f.fileno(), 0, self.gid)
                    os.fchmod(f.fileno(), 0o660)
                f.write(content.encode() if isinstance(content, str) else content)

    def remove(self, rel: str) -> None:
        try:
            os.unlink(Path(self.path, rel))  # unlink never follows a link
        except FileNotFoundError:
            pass

    def close(self) -> None:
        shutil.rmtree(self.host_dir, ignore_errors=True)

    def __enter__(self) -> Workspace:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


class _Drain:
    """Reads a pipe to its end in a thread, keeping the first `limit` bytes (a chatty program can neither
    block on a full pipe nor fill the host's memory)."""

    def __init__(self, pipe: IO[bytes] | None, limit: int) -> None:
        if not isinstance(pipe, io.BufferedReader):  # what Popen(stdout=PIPE) makes without text or bufsize
            raise TypeError(f"_Drain reads a buffered binary pipe, got {pipe!r}")
        self.pipe, self.limit = pipe, limit
        self.buf = bytearray()
        self.truncated = False
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        with self.pipe:
            while chunk := self.pipe.read1(65536):
                room = self.limit - len(self.buf)
                if room > 0:
                    self.buf += chunk[:room]
                if len(chunk) > max(room, 0):
                    self.truncated = True

    def join(self) -> None:
        self.thread.join(timeout=5.0)  # every writer is dead by now; never hang on a leaked descriptor

    def text(self) -> str:
        return self.buf.decode("utf-8", errors="replace")
