"""How a sandboxed command is confined: the argv prefix that wraps it, and the private uid it runs as.

Two confinements, strongest first:

  bwrap     bubblewrap (Debian's `bubblewrap`): new user, pid, network, ipc, uts and cgroup namespaces
            (`--unshare-all`: no network at all, only a loopback), a root file system made of read-only
            binds of /usr, /lib*, /bin (and the Python install if not under /usr), a private tmpfs /tmp, the
            run's work folder bound read-write at /sandbox (the only writable host path), `--die-with-parent`,
            `--new-session` and `--disable-userns`.
  fallback  where bwrap cannot run: `unshare --user --net` (no network) when that works, and a Python audit
            hook (for Python runs) that refuses sockets, other programs and writes outside the work folder
            (TMPDIR is in it). Weaker than bwrap: no pid namespace, the host file system stays readable, and
            non-Python programs are not guarded beyond the network namespace and rlimits.

Both add, through `prlimit`: RLIMIT_AS (memory), RLIMIT_NPROC (processes), RLIMIT_CPU, RLIMIT_FSIZE,
RLIMIT_NOFILE and no core files; and both run the command as a private uid, unused by any other process,
when the host runs as root. A private uid is what makes RLIMIT_NPROC a per-run process limit (the kernel
counts processes per uid, and never limits root) and lets the host kill every process of a run, wherever
it hid, by uid. Runs that share a work folder (one agent episode's parallel tool calls) reach it through a
private group of the folder (see runner.Workspace), never by sharing a uid.
"""

from __future__ import annotations

import functools
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import TypedDict

from .limits import Limits

SANDBOX_DIR = "/sandbox"  # where the work folder appears inside a bwrap sandbox
UID_RANGE = (3_000_000, 3_999_999)  # private uids: far above any real account's

# Read-only paths a program needs to start (binaries, shared libraries, the loader's cache, time zone data).
SYSTEM_RO_PATHS = (
    "/usr",
    "/lib",
    "/lib64",
    "/lib32",
    "/bin",
    "/sbin",
    "/etc/ld.so.cache",
    "/etc/localtime",
    "/etc/alternatives",
)


class SandboxUnavailable(RuntimeError):
    pass


class RunAs(TypedDict, total=False):
    """The subprocess arguments that start a process as a run's private uid; empty: as the host's user."""

    user: int
    group: int
    extra_groups: list[int]


def run_as(uid: int | None, gid: int | None = None) -> RunAs:
    """As `uid` with group `gid` (default: the uid's own) and no supplementary groups; as is when uid is None."""
    if uid is None:
        return {}
    return {"user": uid, "group": gid if gid is not None else uid, "extra_groups": []}


def python_install() -> str:
    """The directory of the Python install the sandbox binds read-only (the base install, not a venv)."""
    return os.path.realpath(sys.base_prefix)


def python_executable() -> str:
    """The base interpreter (a venv's `python` is a symlink into the base install, which the sandbox binds)."""
    exe = Path(python_install()) / "bin" / f"python{sys.version_info.major}.{sys.version_info.minor}"
    if not exe.exists():
        exe = Path(os.path.realpath(sys.executable))
    return str(exe)


def is_root() -> bool:
    return os.geteuid() == 0


def uids_in_use() -> set[int]:
    """Real uids of all live processes (from /proc)."""
    out = set()
    for pid in _pids():
        uid = _uid_of(pid)
        if uid is not None:
            out.add(uid)
    return out


def allocate_uid() -> int:
    """A uid no process uses now. Runs in parallel draw from a million, so a clash is very unlikely; and a
    clash would only make two runs share one process limit, never share files (each has its own folder)."""
    used = uids_in_use()
    while True:
        uid = random.SystemRandom().randint(*UID_RANGE)
        if uid not in used:
            return uid


def processes_of(uid: int, zombies: bool = False) -> list[int]:
    """Live processes of `uid` (zombies, already dead and waiting to be reaped, only when asked)."""
    return [pid for pid in _pids() if _uid_of(pid) == uid and (zombies or _state_of(pid) != "Z")]


def kill_uid(uid: int, deadline_s: float = 5.0) -> int:
    """SIGKILLs every process whose real uid is `uid` until none is left; returns how many it killed.
    Only ever called with a private sandbox uid (never the host's own)."""
    if uid == os.getuid() or uid < UID_RANGE[0]:
        raise ValueError(f"refusing to kill the processes of uid {uid}: not a private sandbox uid")
    killed, end = 0, time.monotonic() + deadline_s
    while True:
        pids = processes_of(uid)
        if not pids:
            return killed
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
                killed += 1
            except (ProcessLookupError, PermissionError):
                pass
        if time.monotonic() > end:
            raise RuntimeError(f"sandbox processes of uid {uid} survive SIGKILL: {processes_of(uid)}")
        time.sleep(0.01)


def count_processes_of_current_user() -> int:
    uid = os.getuid()
    return sum(1 for pid in _pids() if _uid_of(pid) == uid)


def _pids() -> list[int]:
    return [int(p) for p in os.listdir("/proc") if p.isdigit()]


def _state_of(pid: int) -> str | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError, PermissionError, IndexError):
        return None


def _uid_of(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("Uid:"):
                    return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    return None


def prlimit_argv(limits: Limits, nproc: int) -> list[str]:
    """`prlimit` sets the limits in the exec'd process (no preexec_fn: runs start from a thread pool)."""
    exe = shutil.which("prlimit")
    if exe is None:
        raise SandboxUnavailable("the sandbox needs `prlimit` (util-linux); install it: apt-get install -y util-linux")
    return [
        exe,
        f"--as={limits.memory_bytes}",
        f"--nproc={nproc}",
        f"--cpu={limits.effective_cpu_s}",
        f"--fsize={limits.file_size_bytes}",
        f"--nofile={limits.open_files}",
        "--core=0",
        "--",
    ]


def bwrap_argv(
    work_dir: str,
    limits: Limits,
    ro_binds: tuple[str, ...],
    env: dict[str, str],
    binds: tuple[tuple[str, str, bool], ...] = (),
) -> list[str]:
    """The bwrap argv prefix. bwrap runs as the run's uid, so every path it binds by name must be reachable by
    that uid on the host (world-searchable ancestors): the system paths are; see `sandbox_python` for Python.
    binds: (host path, destination, writable), e.g. a program's venv or the folder of a socket."""
    argv = [
        shutil.which("bwrap") or "bwrap",
        "--unshare-all",
        "--unshare-user",
        "--die-with-parent",
        "--new-session",
        "--disable-userns",
        "--hostname",
        "sandbox",
        "--clearenv",
    ]
    for path in dict.fromkeys((*SYSTEM_RO_PATHS, *ro_binds)):
        argv += ["--ro-bind-try", path, path]
    argv += [
        "--proc",
        "/proc",
        "--dev",
        "/dev",
        "--size",
        str(limits.tmp_bytes),
        "--tmpfs",
        "/tmp",
        "--bind",
        work_dir,
        SANDBOX_DIR,
        "--chdir",
        SANDBOX_DIR,
    ]
    for src, dest, writable in binds:
        argv += ["--bind" if writable else "--ro-bind", src, dest]
    for k, v in env.items():
        argv += ["--setenv", k, v]
    return argv + ["--"]


def reachable_by_others(path: str) -> bool:
    """Whether an unrelated uid can reach `path` (every ancestor searchable by others)."""
    p = Path(os.path.realpath(path))
    for d in [*reversed(p.parents), p] if p.is_dir() else reversed(p.parents):
        if not os.stat(d).st_mode & 0o001:
            return False
    return True


def sandbox_python() -> tuple[str, tuple[str, ...]]:
    """The interpreter programs run with, and the path to bind for it. Programs run as a private uid, which
    must be able to reach the interpreter: the trainer's base install when it is world-reachable, else the
    system's /usr/bin/python3 (a pyenv under /root is not). Programs need only the standard library."""
    exe = python_executable()
    if not is_root() or reachable_by_others(exe):
        return exe, (python_install(),)
    if os.path.exists("/usr/bin/python3"):
        return "/usr/bin/python3", ()
    raise SandboxUnavailable(
        f"the sandbox needs a Python its private uid can reach; {exe} is not: apt-get install -y python3"
    )


@functools.cache
def bwrap_works() -> tuple[bool, str]:
    """Whether bwrap can build the sandbox here (it needs unprivileged user namespaces for a non-root uid)."""
    if shutil.which("bwrap") is None:
        return False, "bwrap is not installed (infra/dev/install-sandbox.sh installs it)"
    import tempfile

    with tempfile.TemporaryDirectory(prefix="trainflow-sbx-probe-") as d:
        uid = allocate_uid() if is_root() else None
        if uid is not None:
            os.chown(d, uid, uid)
        kw = run_as(uid)
        argv = bwrap_argv(d, Limits(), (), {"PATH": "/usr/bin:/bin"}) + ["/bin/sh", "-c", "echo ok > /sandbox/probe"]
        p = subprocess.run(argv, capture_output=True, text=True, timeout=30, **kw)
        if p.returncode == 0 and Path(d, "probe").exists():
            return True, "bwrap"
        return False, f"bwrap fails here (exit {p.returncode}): {p.stderr.strip()[:300]}"


@functools.cache
def unshare_net_works() -> bool:
    """Whether `unshare --user --net` can drop the network for a private uid (the fallback's network cut)."""
    if shutil.which("unshare") is None:
        return False
    kw = run_as(allocate_uid() if is_root() else None)
    p = subprocess.run(["unshare", "--user", "--net", "--", "true"], capture_output=True, timeout=30, cwd="/", **kw)
    return p.returncode == 0


# The fallback's Python guard, run before the program: an audit hook that refuses network sockets and any
# write outside the work folder (TMPDIR points into it). (bwrap needs none of this: the kernel enforces it there.)
AUDIT_BOOT = r"""
import os, sys
_root = os.path.realpath(os.getcwd())
def _inside(p):
    try: p = os.path.realpath(os.fsdecode(p) if not isinstance(p, int) else '')
    except Exception: return False
    return p == _root or p.startswith(_root + os.sep)
_CHANGES = ('os.remove', 'os.rename', 'os.mkdir', 'os.rmdir', 'os.chmod', 'os.symlink', 'os.link',
            'shutil.rmtree', 'os.truncate')
def _guard(event, args):
    if event in ('socket.connect', 'socket.bind', 'socket.sendto', 'socket.sendmsg', 'socket.getaddrinfo'):
        raise PermissionError('sandbox: no network')
    if event == 'socket.__new__' and args[1] not in (1,):  # AF_UNIX only
        raise PermissionError('sandbox: no network')
    if event in ('os.system', 'os.exec', 'os.posix_spawn', 'os.spawn', 'subprocess.Popen', 'ctypes.dlopen'):
        raise PermissionError('sandbox: running other programs is not allowed here')
    writes = event == 'open' and args[1] and any(c in args[1] for c in 'wax+')
    if writes or event in _CHANGES:
        if args and isinstance(args[0], (str, bytes)) and not _inside(args[0]):
            raise PermissionError('sandbox: writes outside the work folder are not allowed: %r' % (args[0],))
sys.addaudithook(_guard)
sys.argv = sys.argv[1:]
_path = sys.argv[0]
sys.path.insert(0, os.path.dirname(os.path.abspath(_path)))
import runpy; runpy.run_path(_path, run_name='__main__')
"""
