"""Bring your own agent (`rollout.agent`): any program that speaks the OpenAI Chat Completions API, run once per
episode inside the sandbox, its working folder the task's workspace.

The sandbox has no network. The program reaches its proxy session through a bridge: on the host, a Unix socket
(in a folder of the episode, bound into the sandbox at /run/trainflow) forwards to the proxy; inside, a small
forwarder started before the program listens on 127.0.0.1:4000 and forwards to that socket. So
`OPENAI_BASE_URL=http://127.0.0.1:4000/v1` is the one address the program can reach, and it reaches only the
proxy, with its session's key as `OPENAI_API_KEY` (the proxy records its tokens like the reference agent's).

The program's executable and any absolute path in its arguments are bound read-only at their own paths (a path
inside a virtualenv binds the whole venv; one under /root, which the sandbox's uid cannot enter, is mirrored).
HOME is the sandbox's private /tmp. The reward is the verifier's verdict on the final workspace
(tasks/verify.py `verify_workspace`); whatever the program prints or claims is ignored.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import socket
import tempfile
import threading
import time
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..sandbox import Limits, Sandbox, Workspace
from ..sandbox.confinement import is_root, reachable_by_others
from ..tasks import Task
from ..tasks.verify import verify_workspace

INSIDE_PORT = 4000
BRIDGE_DIR = "/run/trainflow"

# The in-sandbox forwarder: 127.0.0.1:4000 -> the bridge socket, then the agent program as its child.
FORWARDER = r"""
import os, socket, subprocess, sys, threading
SOCK = sys.argv[1]
def pipe(a, b):
    try:
        while True:
            data = a.recv(65536)
            if not data:
                break
            b.sendall(data)
    except OSError:
        pass
    finally:
        for s in (a, b):
            try: s.shutdown(socket.SHUT_RDWR)
            except OSError: pass
def serve(listener):
    while True:
        conn, _ = listener.accept()
        up = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        up.connect(SOCK)
        for a, b in ((conn, up), (up, conn)):
            threading.Thread(target=pipe, args=(a, b), daemon=True).start()
ls = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
ls.bind(("127.0.0.1", int(sys.argv[2])))
ls.listen(64)
threading.Thread(target=serve, args=(ls,), daemon=True).start()
sys.exit(subprocess.call(sys.argv[3:]))
"""


@dataclass(frozen=True)
class ByoAgent:
    command: list[str]
    env: dict[str, str]
    timeout_s: float

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ByoAgent:
        return cls(list(d["command"]), dict(d.get("env") or {}), float(d["timeout_s"]))


class Bridge:
    """Host side: a Unix socket in `folder` whose every connection is forwarded to the proxy's TCP address."""

    def __init__(self, folder: str, base_url: str, gid: int | None):
        u = urllib.parse.urlsplit(base_url)
        self.target = (u.hostname or "127.0.0.1", u.port or 80)
        self.path = os.path.join(folder, "proxy.sock")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(self.path)
        if gid is not None:  # the run's private uid reaches it through the workspace's group
            os.chown(self.path, 0, gid)
        os.chmod(self.path, 0o660)
        self.sock.listen(64)
        self.closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self.closed:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            try:
                up = socket.create_connection(self.target, timeout=30)
                up.settimeout(None)
            except OSError:
                conn.close()
                continue
            for a, b in ((conn, up), (up, conn)):
                threading.Thread(target=_pipe, args=(a, b), daemon=True).start()

    def close(self) -> None:
        self.closed = True
        self.sock.close()


def _pipe(a: socket.socket, b: socket.socket) -> None:
    try:
        while data := a.recv(65536):
            b.sendall(data)
    except OSError:
        pass
    finally:
        for s in (a, b):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


def host_path(arg: str) -> str:
    """An argument's host path with its folders resolved but not the last link (a venv's bin/python stays
    the venv's: resolving it would leave the venv)."""
    return os.path.join(os.path.realpath(os.path.dirname(arg)), os.path.basename(arg))


def venv_root(path: str) -> str | None:
    for d in Path(path).parents[:3]:
        if (d / "pyvenv.cfg").is_file():
            return str(d)
    return None


_mirrors: dict[str, str] = {}
_mirror_lock = threading.Lock()


def reachable(path: str) -> str:
    """`path`, or where the run's private uid can reach a copy of it. The sandbox runs as a uid that cannot
    enter /root, where the agents venv is cached: such a path is mirrored once per worker by hard links (a
    second, plain copy where links fail) into a world-readable folder, deleted when the worker exits."""
    if not is_root() or reachable_by_others(path):
        return path
    with _mirror_lock:
        if path not in _mirrors:
            root = tempfile.mkdtemp(prefix="trainflow-byo-")
            os.chmod(root, 0o755)
            dest = os.path.join(root, "m")
            try:
                shutil.copytree(path, dest, symlinks=True, copy_function=os.link)
            except OSError:
                shutil.rmtree(dest, ignore_errors=True)
                shutil.copytree(path, dest, symlinks=True)
            atexit.register(shutil.rmtree, root, True)
            _mirrors[path] = dest
        return _mirrors[path]


def program_binds(command: list[str]) -> tuple[list[str], dict[str, str]]:
    """The command with absolute paths resolved, and what to bind for it: host path -> its own path inside."""
    argv, binds = [], {}
    for arg in command:
        if arg.startswith("/") and os.path.lexists(arg):
            arg = host_path(arg)
            root = venv_root(arg)
            src = root or (os.path.realpath(arg) if os.path.isdir(arg) else os.path.dirname(arg))
            if not any(src == p or src.startswith(p + os.sep) for p in ("/usr", "/bin", "/lib")):
                binds[reachable(src)] = src
        argv.append(arg)
    return argv, binds


def task_prompt(task: Task) -> str:
    return "\n\n".join(m["content"] for m in task.prompt if m.get("role") == "user")


@contextlib.contextmanager
def _workspace(task: Task, sandbox: Sandbox, limits: Limits) -> Iterator[tuple[Workspace, Sandbox, dict[str, str]]]:
    """The episode's workspace, the sandbox to run in, and the environment its commands need: a swe task's
    repository copy (without the hidden tests) with its venv, else a folder holding the task's files."""
    if task.verifier.get("kind") == "swe_tests":
        from ..tasks.swe import environment_for

        env = environment_for(task)
        swe_sandbox = env.sandbox(limits)
        with env.open_episode(swe_sandbox) as ep:
            command_env = env.command_env(ep.root)
            command_env.pop("HOME", None)
            yield ep.workspace, swe_sandbox, command_env
        return
    with sandbox.workspace() as ws:
        ws.write(task.environment.get("files") or {})
        yield ws, sandbox, {}


def run_episode(task: Task, base_url: str, api_key: str | None, agent: ByoAgent, sandbox: Sandbox) -> dict[str, Any]:
    """One episode of the program on `task`; returns the episode's fields (the contract's Episode)."""
    t0 = time.monotonic()
    argv, binds = program_binds(agent.command)
    limits = Limits(timeout_s=agent.timeout_s, memory_bytes=4 * 2**30, max_processes=64)
    with _workspace(task, sandbox, limits) as (ws, sandbox, task_env):
        bridge_dir = tempfile.mkdtemp(prefix="bridge-", dir=ws.host_dir)
        if ws.gid is not None:
            os.chown(bridge_dir, 0, ws.gid)
        os.chmod(bridge_dir, 0o2770 if ws.gid is not None else 0o777)
        forwarder = os.path.join(bridge_dir, "forward.py")
        Path(forwarder).write_text(FORWARDER)
        os.chmod(forwarder, 0o644)
        bridge = Bridge(bridge_dir, base_url, ws.gid)
        venv = venv_root(argv[0]) if argv[0].startswith("/") else None
        path = (f"{venv}/bin:" if venv else "") + "/usr/local/bin:/usr/bin:/bin"
        if task_env.get("PATH"):  # a swe task's venv comes first: the program's commands test the repository
            path = task_env["PATH"].split(":", 1)[0] + ":" + path
        env = {
            **task_env,
            "PATH": path,
            "HOME": "/tmp",
            "OPENAI_BASE_URL": f"http://127.0.0.1:{INSIDE_PORT}/v1",
            "OPENAI_API_KEY": api_key or "none",
            "TRAINFLOW_TASK_ID": task.id,
            "TRAINFLOW_TASK_PROMPT": task_prompt(task),
            **agent.env,
        }
        try:
            run = sandbox.run(
                [sandbox.python, "-I", f"{BRIDGE_DIR}/forward.py", f"{BRIDGE_DIR}/proxy.sock", str(INSIDE_PORT), *argv],
                limits=limits,
                workspace=ws,
                env=env,
                binds={**binds, bridge_dir: BRIDGE_DIR},
            )
        finally:
            bridge.close()
            shutil.rmtree(bridge_dir, ignore_errors=True)
        verdict = verify_workspace(task, ws.path, sandbox)
    stop = "timeout" if run.timed_out else ("exit" if run.exit_code == 0 else "error")
    return {
        "task_id": task.id,
        "reward": verdict.reward,
        "passed": verdict.passed,
        "verdict": verdict.reason,
        "tests": verdict.tests,
        "stop": stop,
        "turns": 0,  # the proxy counts the program's turns; the program's own account is not trusted
        "tool_calls": 0,
        "duration_s": time.monotonic() - t0,
        "error": None if stop == "exit" else (run.stderr.strip()[-1500:] or f"exit code {run.exit_code}"),
    }
