"""Grade an episode's final workspace: the agent's source changes on a fresh base tree, the tests restored.

The grading tree is built afresh in a new sandbox workspace: the base tree with every test file as it was
(hidden tests included, test_patch applied), then the agent's changes to files that are not the tests'
(instance.is_protected: test modules, tests folders, conftest.py, pytest/tox/setup config, *.pth,
site/usercustomize). So deleting, editing or adding tests changes nothing, and links the agent left are never
followed. FAIL_TO_PASS and PASS_TO_PASS run there; the reward is 1 iff every one passes (0 otherwise), or,
with partial credit, the share of FAIL_TO_PASS tests passing when every PASS_TO_PASS test passes (0 if one
fails: a fix that breaks working code earns nothing). Every test's outcome is kept in the Grade.
"""

from __future__ import annotations

import os
import shutil
import stat
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ...sandbox import Limits, RunResult, Workspace
from .environment import SweEnvironment, apply_patch, populate
from .instance import is_protected, patch_files
from .testrun import PASSING, run_tests

MAX_FILE_BYTES = 8 * 2**20  # a larger file in the workspace is not taken (no source file is this big)
MAX_TOTAL_BYTES = 256 * 2**20


@dataclass
class Changes:
    writes: dict[str, str | bytes] = field(default_factory=dict)  # changed or new files the grade takes
    deletes: list[str] = field(default_factory=list)  # files of the base tree the agent removed
    ignored: list[str] = field(default_factory=list)  # the agent's changes to the tests' files (not taken)


@dataclass
class Grade:
    reward: float
    passed: bool
    reason: str
    fail_to_pass: dict[str, str]  # test id -> outcome
    pass_to_pass: dict[str, str]
    changed: list[str]
    ignored: list[str]
    duration_s: float
    run: RunResult | None = None

    def to_dict(self) -> dict:
        d = asdict(self)
        d.pop("run")
        return d

    @property
    def tests(self) -> dict[str, str]:
        return {**self.pass_to_pass, **self.fail_to_pass}


def collect_changes(base: Path, work: Path, hidden: set[str]) -> Changes:
    """What the agent changed in `work` relative to the base tree. Reads the untrusted folder without following
    links; only regular files count."""
    ch = Changes()
    seen: set[str] = set()
    total = 0
    for dirpath, dirnames, filenames in os.walk(work):
        dirnames[:] = [d for d in dirnames if not os.path.islink(os.path.join(dirpath, d))]
        for name in filenames:
            path = os.path.join(dirpath, name)
            rel = os.path.normpath(os.path.relpath(path, work))
            seen.add(rel)
            st = os.lstat(path)
            if not stat.S_ISREG(st.st_mode) or rel.startswith(".trainflow-"):
                continue
            base_file = base / rel
            data = _read_nofollow(path, MAX_FILE_BYTES)
            if data is None:
                ch.ignored.append(rel)
                continue
            if base_file.is_file() and base_file.read_bytes() == data:
                continue
            if is_protected(rel, hidden):
                ch.ignored.append(rel)
                continue
            total += len(data)
            if total > MAX_TOTAL_BYTES:
                ch.ignored.append(rel)
                continue
            ch.writes[rel] = data
    for dirpath, _dirs, filenames in os.walk(base):
        for name in filenames:
            rel = os.path.normpath(os.path.relpath(os.path.join(dirpath, name), base))
            if rel not in seen and rel not in hidden:  # hidden tests were never in the workspace
                (ch.ignored if is_protected(rel, hidden) else ch.deletes).append(rel)
    ch.ignored.sort()
    ch.deletes.sort()
    return ch


def _read_nofollow(path: str, limit: int) -> bytes | None:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError:
        return None
    with os.fdopen(fd, "rb") as f:
        data = f.read(limit + 1)
    return None if len(data) > limit else data


def grade_workspace(
    env: SweEnvironment, work: Path, partial_credit: bool = False, limits: Limits | None = None
) -> Grade:
    """Grades the final state of an episode's repository copy at `work` (a host folder)."""
    inst = env.instance
    hidden = set(inst.hidden_test_files())
    ch = collect_changes(env.tree, work, hidden)
    return _grade(env, ch, partial_credit, limits)


def grade_patch(env: SweEnvironment, patch: str, partial_credit: bool = False, limits: Limits | None = None) -> Grade:
    """Grades a patch against the base tree (`tasks check`: the gold patch must score 1, an empty one 0)."""
    with tempfile.TemporaryDirectory(prefix="trainflow-swe-patch-") as tmp:
        work = Path(tmp) / "tree"
        shutil.copytree(env.tree, work, symlinks=True)
        if patch.strip():
            apply_patch(work, patch, "apply the patch to grade")
        ch = collect_changes(env.tree, work, set(env.instance.hidden_test_files()))
    return _grade(env, ch, partial_credit, limits)


def _grade(env: SweEnvironment, ch: Changes, partial_credit: bool, limits: Limits | None) -> Grade:
    inst = env.instance
    t0 = time.monotonic()
    sandbox = env.sandbox()
    with sandbox.workspace() as ws:
        build_grading_tree(env, ws, ch)
        tr = run_tests(env, sandbox, ws, inst.test_ids(), limits)
    f2p = {t: tr.requested[t] for t in inst.FAIL_TO_PASS}
    p2p = {t: tr.requested[t] for t in inst.PASS_TO_PASS}
    f2p_ok = sum(o in PASSING for o in f2p.values())
    p2p_ok = sum(o in PASSING for o in p2p.values())
    all_pass = f2p_ok == len(f2p) and p2p_ok == len(p2p)
    if partial_credit:
        reward = f2p_ok / len(f2p) if f2p and p2p_ok == len(p2p) else float(all_pass)
    else:
        reward = float(all_pass)
    if all_pass:
        reason = f"all {len(f2p)} FAIL_TO_PASS and {len(p2p)} PASS_TO_PASS tests pass"
    else:
        reason = f"FAIL_TO_PASS {f2p_ok}/{len(f2p)} pass, PASS_TO_PASS {p2p_ok}/{len(p2p)} pass"
        if tr.run.timed_out:
            reason += f" (the test run timed out after {tr.run.duration_s:.0f}s)"
    if ch.ignored:
        reason += f"; {len(ch.ignored)} change(s) to test files ignored"
    return Grade(
        reward=reward,
        passed=all_pass,
        reason=reason,
        fail_to_pass=f2p,
        pass_to_pass=p2p,
        changed=sorted([*ch.writes, *ch.deletes]),
        ignored=ch.ignored,
        duration_s=time.monotonic() - t0,
        run=tr.run,
    )


def build_grading_tree(env: SweEnvironment, ws: Workspace, ch: Changes) -> None:
    """The base tree with its tests (test_patch applied), then the agent's changes to non-test files."""
    populate(ws, env.tree)
    if env.instance.test_patch.strip():
        with tempfile.TemporaryDirectory(prefix="trainflow-swe-tests-") as tmp:
            files = patch_files(env.instance.test_patch)
            for rel in files:
                if (env.tree / rel).is_file():
                    (Path(tmp) / rel).parent.mkdir(parents=True, exist_ok=True)
                    shutil.copyfile(env.tree / rel, Path(tmp) / rel)
            apply_patch(Path(tmp), env.instance.test_patch, "apply test_patch")
            ws.write({rel: (Path(tmp) / rel).read_bytes() for rel in files if (Path(tmp) / rel).is_file()})
    for rel in ch.deletes:
        ws.remove(rel)
    ws.write(ch.writes)
