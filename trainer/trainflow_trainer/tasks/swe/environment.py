"""Environments of SWE instances without Docker: built once per instance, copied once per episode.

Built once (cached under `cache_root()`, keyed by content, safe to share between processes):
  tree   the base tree: the snapshot's source (sdist, folder or git revision) with the setup patch applied.
         It holds the hidden tests; it is never bound into a sandbox, and its folder is private to the host
         user (mode 0700), so no sandboxed uid can read it even in the sandbox's weaker fallback mode.
  venv   a virtualenv of the sandbox's interpreter (/usr/bin/python3) with the instance's pinned requirements,
         installed from PyPI through pip's cache at build time, plus trainflow's pytest report plugin.
         Instances with the same requirements share one. Episodes see it read-only (a bwrap ro-bind).

Per episode (`SweEnvironment.open_episode`): a private sandbox workspace holding a copy of the base tree
without the hidden test files, commands run confined in it (bash, PATH and PYTHONPATH set to the venv and the
tree), and `SweEpisode.grade()` scores the final workspace (grade.py).

    env = build_environment(instance)                  # minutes the first time, then instant
    with env.open_episode() as ep:
        ep.run("grep -rn 'def parse' sqlparse | head")   # RunResult
        ep.write({"sqlparse/utils.py": fixed})
        grade = ep.grade()                              # Grade(reward=1.0, ...)
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import stat
import subprocess
import tarfile
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from ...sandbox import Limits, RunResult, Sandbox, Workspace
from ...sandbox import confinement as cf
from .instance import EnvironmentSpec, SweInstance
from .testrun import PLUGIN_MODULE, PLUGIN_SOURCE

if TYPE_CHECKING:
    from .grade import Grade

CACHE_ENV = "TRAINFLOW_SWE_CACHE"
CACHE_VERSION = "1"  # bump when the layout of a cached tree or venv changes
# An episode command's limits (the agent's tools may pass their own).
EPISODE_LIMITS = Limits(timeout_s=60.0, memory_bytes=2 * 2**30, max_processes=64, tmp_bytes=256 * 2**20)


class EnvironmentError_(RuntimeError):
    """An instance whose environment cannot be built (the reason says what is missing and how to fix it)."""


def cache_root() -> Path:
    """Where trees and venvs are cached. The venvs must be reachable by a sandbox's private uid, so the default is
    outside /root (mode 0700): /var/cache/trainflow/swe as root, else ~/.cache/trainflow/swe."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    if cf.is_root():
        return Path("/var/cache/trainflow/swe")
    return Path.home() / ".cache" / "trainflow" / "swe"


def _key(obj: object) -> str:
    return hashlib.sha256(json.dumps([CACHE_VERSION, obj], sort_keys=True).encode()).hexdigest()[:16]


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    """An exclusive lock next to `path`, so two processes never build the same thing at once."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(str(path) + ".lock", "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _ensure_reachable(root: Path) -> None:
    """Make the cache root searchable by other uids and check its ancestors are (a sandbox's uid must reach
    the venvs under it)."""
    root.mkdir(parents=True, exist_ok=True)
    os.chmod(root, os.stat(root).st_mode | 0o755)
    for d in root.parents:
        if not os.stat(d).st_mode & 0o001:
            raise EnvironmentError_(
                f"the SWE cache {root} is under {d}, which other users cannot enter, so a sandbox could not "
                f"reach its venvs: set {CACHE_ENV} to a folder outside it (e.g. /var/cache/trainflow/swe)"
            )


# ---- venvs -----------------------------------------------------------------------------------------------


def interpreter_for(spec: EnvironmentSpec) -> str:
    exe = f"/usr/bin/python{spec.python}"
    if not os.path.exists(exe):
        raise EnvironmentError_(
            f"environment.python: {exe} does not exist (the sandbox runs the system's Python; "
            f"install it, e.g. apt-get install -y python{spec.python}, or change environment.python)"
        )
    return exe


def build_venv(spec: EnvironmentSpec, root: Path | None = None) -> Path:
    """The venv of `spec`, built once (pip from PyPI, through pip's cache) and then reused."""
    root = root or cache_root()
    _ensure_reachable(root)
    exe = interpreter_for(spec)
    reqs = sorted(spec.requirements)
    venv = root / "venvs" / _key({"python": os.path.realpath(exe), "requirements": reqs, "plugin": PLUGIN_SOURCE})
    if (venv / ".complete").exists():
        return venv
    with _locked(venv):
        if (venv / ".complete").exists():
            return venv
        shutil.rmtree(venv, ignore_errors=True)
        _run([exe, "-m", "venv", str(venv)], "create the venv")
        if reqs:
            _run(
                [str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "--disable-pip-version-check", *reqs],
                f"install {' '.join(reqs)} from PyPI",
            )
        site = _site_packages(venv)
        (site / f"{PLUGIN_MODULE}.py").write_text(PLUGIN_SOURCE)
        _chmod_tree(venv, "a+rX")
        (venv / ".complete").write_text(json.dumps({"python": exe, "requirements": reqs}))
    return venv


def _site_packages(venv: Path) -> Path:
    found = sorted((venv / "lib").glob("python3*/site-packages"))
    if not found:
        raise EnvironmentError_(f"the venv {venv} has no lib/python3*/site-packages")
    return found[0]


def _chmod_tree(path: Path, how: str) -> None:
    subprocess.run(["chmod", "-R", how, str(path)], check=True)


def _run(argv: list[str], what: str, cwd: str | None = None, env: dict[str, str] | None = None) -> None:
    p = subprocess.run(argv, capture_output=True, text=True, cwd=cwd, env=env)
    if p.returncode != 0:
        tail = (p.stderr or p.stdout).strip().splitlines()[-5:]
        raise EnvironmentError_(f"could not {what} (exit {p.returncode}): " + " | ".join(tail))


# ---- trees -----------------------------------------------------------------------------------------------


def build_tree(inst: SweInstance, root: Path | None = None) -> Path:
    """The instance's base tree (snapshot + setup patch), built once into a host-private folder."""
    if inst.snapshot is None:
        raise EnvironmentError_(
            "snapshot: no repository snapshot (a SWE-bench instance names a GitHub repository and commit; "
            "offline, trainflow needs a local copy: set snapshot {kind: git|sdist|dir, path})"
        )
    root = root or cache_root()
    _ensure_reachable(root)
    snap = inst.snapshot
    base = root / "trees" / _key({"snapshot": snap.model_dump(), "commit": inst.base_commit})
    tree = base / "tree"
    if (base / ".complete").exists():
        return tree
    with _locked(base):
        if (base / ".complete").exists():
            return tree
        shutil.rmtree(base, ignore_errors=True)
        base.mkdir(parents=True)
        os.chmod(base, 0o700)  # the hidden tests live here: no other uid may enter
        _materialise(inst, tree)
        if snap.setup_patch:
            apply_patch(tree, snap.setup_patch, "apply snapshot.setup_patch")
        (base / ".complete").write_text(inst.instance_id)
    return tree


def _materialise(inst: SweInstance, dest: Path) -> None:
    snap = inst.snapshot
    assert snap is not None
    src = Path(snap.path)
    if not src.exists():
        raise EnvironmentError_(f"snapshot.path: {src} does not exist (the {snap.kind} snapshot of {inst.repo})")
    if snap.kind == "dir":
        shutil.copytree(src, dest, symlinks=True)
    elif snap.kind == "sdist":
        if snap.sha256 and hashlib.sha256(src.read_bytes()).hexdigest() != snap.sha256:
            raise EnvironmentError_(f"snapshot.sha256: {src} does not match {snap.sha256} (a different archive)")
        with tempfile.TemporaryDirectory(dir=dest.parent) as tmp, tarfile.open(src) as tar:
            tar.extractall(tmp, filter="data")
            tops = os.listdir(tmp)
            sub = snap.subdir or (tops[0] if len(tops) == 1 else None)
            if sub is None or not (Path(tmp) / sub).is_dir():
                raise EnvironmentError_(f"snapshot.subdir: name the archive's top folder (it has {sorted(tops)})")
            os.rename(Path(tmp) / sub, dest)
    else:  # git
        rev = inst.base_commit or "HEAD"
        dest.mkdir()
        git = subprocess.Popen(["git", f"--git-dir={_git_dir(src)}", "archive", rev], stdout=subprocess.PIPE)
        assert git.stdout is not None
        with tarfile.open(fileobj=git.stdout, mode="r|") as tar:
            tar.extractall(dest, filter="data")
        if git.wait() != 0:
            raise EnvironmentError_(f"base_commit: git archive {rev} failed in {src} (is the commit there?)")


def _git_dir(src: Path) -> Path:
    return src / ".git" if (src / ".git").exists() else src


def apply_patch(tree: Path, patch: str, what: str) -> None:
    """Applies a unified diff (git a/ b/ style) to a folder that is not a git repository."""
    env = {**os.environ, "GIT_CEILING_DIRECTORIES": str(tree.parent)}
    with tempfile.NamedTemporaryFile("w", suffix=".diff", delete=False) as f:
        f.write(patch if patch.endswith("\n") else patch + "\n")
    try:
        _run(["git", "apply", "--whitespace=nowarn", "-p1", f.name], what, cwd=str(tree), env=env)
    finally:
        os.unlink(f.name)


# ---- episodes --------------------------------------------------------------------------------------------


@dataclass
class SweEnvironment:
    """A built instance: its base tree (with the hidden tests) and its venv."""

    instance: SweInstance
    tree: Path
    venv: Path
    limits: Limits = field(default_factory=lambda: EPISODE_LIMITS)

    def sandbox(self, limits: Limits | None = None, confinement: str = "auto") -> Sandbox:
        """A sandbox that sees the venv read-only (and nothing else of the host but the system)."""
        return Sandbox(limits or self.limits, confinement=confinement, ro_binds=(str(self.venv),))

    def command_env(self, root: str) -> dict[str, str]:
        """The environment of a command whose repository copy is at `root` (as the sandbox sees it)."""
        spec = self.instance.environment or EnvironmentSpec()
        return {
            "PATH": f"{self.venv}/bin:/usr/local/bin:/usr/bin:/bin",
            "VIRTUAL_ENV": str(self.venv),
            "PYTHONPATH": ":".join(os.path.normpath(os.path.join(root, p)) for p in spec.pythonpath),
            "PYTHONDONTWRITEBYTECODE": "1",
            "HOME": root,
        }

    def open_episode(self, sandbox: Sandbox | None = None) -> SweEpisode:
        sandbox = sandbox or self.sandbox()
        ws = sandbox.workspace()
        try:
            populate(ws, self.tree, skip=set(self.instance.hidden_test_files()))
        except BaseException:
            ws.close()
            raise
        return SweEpisode(self, sandbox, ws)


def root_in_sandbox(sandbox: Sandbox, ws: Workspace) -> str:
    """Where a workspace's folder appears to the commands run in it."""
    return cf.SANDBOX_DIR if sandbox.confinement == "bwrap" else ws.path


def run_in(env: SweEnvironment, sandbox: Sandbox, ws: Workspace, command: str, limits: Limits | None) -> RunResult:
    root = root_in_sandbox(sandbox, ws)
    argv = ["/usr/bin/env", *[f"{k}={v}" for k, v in env.command_env(root).items()], "/bin/bash", "-c", command]
    return sandbox.run(argv, workspace=ws, limits=limits)


class SweEpisode:
    """One episode's private copy of the repository (without the hidden tests) in a sandbox workspace."""

    def __init__(self, env: SweEnvironment, sandbox: Sandbox, workspace: Workspace):
        self.env, self.sandbox, self.workspace = env, sandbox, workspace

    @property
    def path(self) -> str:
        """The copy's folder on the host (what grading reads)."""
        return self.workspace.path

    @property
    def root(self) -> str:
        """The copy's folder as the episode's commands see it (/sandbox under bwrap)."""
        return root_in_sandbox(self.sandbox, self.workspace)

    def run(self, command: str, limits: Limits | None = None) -> RunResult:
        """A bash command line, confined, in the repository's root, with the venv's python and pytest on PATH."""
        return run_in(self.env, self.sandbox, self.workspace, command, limits)

    def write(self, files: dict[str, str | bytes]) -> None:
        self.workspace.write(files)

    def grade(self, partial_credit: bool = False) -> Grade:
        from .grade import grade_workspace

        return grade_workspace(self.env, Path(self.path), partial_credit=partial_credit)

    def close(self) -> None:
        self.workspace.close()

    def __enter__(self) -> SweEpisode:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def populate(ws: Workspace, src: Path, skip: set[str] | frozenset[str] = frozenset()) -> None:
    """Copies the tree `src` into the workspace (files group-owned by the workspace's gid, like Workspace.write),
    leaving out the paths in `skip` and links (a link could point anywhere on the host)."""
    dest = Path(ws.path)
    for dirpath, dirnames, filenames in os.walk(src):
        rel_dir = os.path.relpath(dirpath, src)
        for d in list(dirnames):
            if os.path.islink(os.path.join(dirpath, d)):
                dirnames.remove(d)
                continue
            target = dest / rel_dir / d
            target.mkdir(mode=0o770)
            _own(ws, target, 0o2770)
        for name in filenames:
            rel = os.path.normpath(os.path.join(rel_dir, name))
            s = os.path.join(dirpath, name)
            if rel in skip or not stat.S_ISREG(os.lstat(s).st_mode):
                continue
            target = dest / rel
            shutil.copyfile(s, target)
            _own(ws, target, 0o770 if os.stat(s).st_mode & 0o100 else 0o660)


def _own(ws: Workspace, path: Path, mode: int) -> None:
    if ws.gid is not None:
        os.chown(path, 0, ws.gid, follow_symlinks=False)
    os.chmod(path, mode)


def build_environment(inst: SweInstance, root: Path | None = None) -> SweEnvironment:
    """Builds (or finds in the cache) the instance's base tree and venv."""
    tree = build_tree(inst, root)
    venv = build_venv(inst.environment or EnvironmentSpec(), root)
    return SweEnvironment(inst, tree, venv)


def unusable_reason(inst: SweInstance) -> str | None:
    """Why an instance's environment cannot be built offline (None: it can, as far as can be told unbuilt)."""
    if inst.snapshot is None:
        return (
            "no repository snapshot: trainflow builds environments without Docker and offline, so it needs "
            "snapshot {kind: git|sdist|dir, path} (image_name is not used)"
        )
    if not Path(inst.snapshot.path).exists():
        return f"snapshot.path {inst.snapshot.path} does not exist"
    if inst.environment is None:
        return (
            "no environment spec: set environment {python, requirements, pythonpath} "
            "(SWE-bench's per-repository install specs are not shipped with trainflow)"
        )
    words = inst.test_cmd.split()
    if words[:3] != ["python", "-m", "pytest"] and words[:1] != ["pytest"]:
        return f"test_cmd {inst.test_cmd!r}: only pytest-based test commands are supported (per-test outcomes)"
    if not inst.FAIL_TO_PASS:
        return "FAIL_TO_PASS is empty (an instance needs at least one failing test)"
    try:
        interpreter_for(inst.environment)
    except EnvironmentError_ as e:
        return str(e)
    return None
