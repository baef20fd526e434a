"""Run test ids of a tree in a sandbox with its instance's venv, and read back each test's outcome.

Tests run under pytest with a small report plugin (installed into every instance venv, so it is read-only in
the sandbox) that writes {nodeid: outcome} to a JSON file in the run's private work folder. Outcomes:
passed, failed, error (setup/teardown or collection failed), skipped, xfailed, xpassed; a test the run never
reached (a crash, a timeout, a deleted file) is `missing`. Passing means passed or xfailed (SWE-bench's rule).

Only the files of the requested ids are collected (a test id is `path::name`), so a run costs what those
files cost, and the outcomes of the requested ids are returned.
"""

from __future__ import annotations

import json
import os
import shlex
import time
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ...sandbox import Limits, RunResult, Sandbox, Workspace

if TYPE_CHECKING:
    from .environment import SweEnvironment

PLUGIN_MODULE = "trainflow_swe_report"
REPORT_ENV = "TRAINFLOW_SWE_REPORT"
PASSING = frozenset({"passed", "xfailed"})
# What one test run may use: a suite of a few thousand tests, with room for its subprocesses.
TEST_LIMITS = Limits(timeout_s=300.0, memory_bytes=4 * 2**30, max_processes=64, tmp_bytes=256 * 2**20)

PLUGIN_SOURCE = '''"""trainflow's pytest plugin: each test's outcome, as JSON, into the file $TRAINFLOW_SWE_REPORT."""
import json
import os

_outcomes = {}
_messages = {}


def _set(nodeid, outcome):
    # the worst phase wins: an error in teardown spoils a passed call
    order = ("passed", "xfailed", "skipped", "xpassed", "failed", "error")
    if nodeid not in _outcomes or order.index(outcome) > order.index(_outcomes[nodeid]):
        _outcomes[nodeid] = outcome


def _message(report):
    crash = getattr(report.longrepr, "reprcrash", None)
    text = getattr(crash, "message", None) or str(report.longrepr or "")
    return text[-2000:]


def pytest_runtest_logreport(report):
    xfail = hasattr(report, "wasxfail")
    if report.failed and report.nodeid not in _messages:
        _messages[report.nodeid] = _message(report)
    if report.when == "call":
        if xfail:
            _set(report.nodeid, "xfailed" if report.skipped else "xpassed")
        else:
            _set(report.nodeid, report.outcome)
    elif report.failed:
        _set(report.nodeid, "error")
    elif report.skipped and report.when == "setup":
        _set(report.nodeid, "xfailed" if xfail else "skipped")


def pytest_collectreport(report):
    if report.failed:
        _set(report.nodeid or "<collection>", "error")
        _messages.setdefault(report.nodeid or "<collection>", _message(report))


def pytest_sessionfinish(session, exitstatus):
    path = os.environ.get("TRAINFLOW_SWE_REPORT")
    if path:
        with open(path, "w") as f:
            json.dump({"outcomes": _outcomes, "messages": _messages}, f)
'''


@dataclass
class TestRun:
    outcomes: dict[str, str]  # every test the run reported (not only the requested ones)
    requested: dict[str, str]  # the requested ids' outcomes ("missing" when not reported)
    run: RunResult
    duration_s: float
    files: list[str] = field(default_factory=list)
    messages: dict[str, str] = field(default_factory=dict)  # a failing test's crash message

    def passing(self, test_id: str) -> bool:
        return self.requested.get(test_id, self.outcomes.get(test_id, "missing")) in PASSING

    def to_dict(self) -> dict:
        return {
            "requested": self.requested,
            "duration_s": self.duration_s,
            "exit_code": self.run.exit_code,
            "timed_out": self.run.timed_out,
        }


def test_files_of(test_ids: list[str]) -> list[str]:
    """The files to collect for these ids (an id without `::` is passed as it is)."""
    return list(dict.fromkeys(t.split("::", 1)[0] for t in test_ids))


def run_tests(
    env: SweEnvironment,
    sandbox: Sandbox,
    ws: Workspace,
    test_ids: list[str] | None,
    limits: Limits | None = None,
) -> TestRun:
    """Runs the tests of `test_ids` (None: the instance's whole configured suite) in the workspace `ws`, which
    holds a tree; returns each test's outcome."""
    from .environment import root_in_sandbox, run_in

    root = root_in_sandbox(sandbox, ws)
    report_name = f".trainflow-swe-report-{uuid.uuid4().hex}.json"
    files = test_files_of(test_ids) if test_ids is not None else []
    cmd = (
        f"{REPORT_ENV}={shlex.quote(os.path.join(root, report_name))} {env.instance.test_cmd} "
        f"-p {PLUGIN_MODULE} -p no:cacheprovider -q --tb=short -o console_output_style=classic "
        + " ".join(shlex.quote(f) for f in files)
    )
    t0 = time.monotonic()
    run = run_in(env, sandbox, ws, cmd, limits or TEST_LIMITS)
    duration = time.monotonic() - t0
    outcomes, messages = read_report(os.path.join(ws.path, report_name))
    ws.remove(report_name)
    requested = {t: outcomes.get(t, "missing") for t in test_ids} if test_ids is not None else dict(outcomes)
    return TestRun(outcomes, requested, run, duration, files, messages)


def read_report(path: str) -> tuple[dict[str, str], dict[str, str]]:
    """The plugin's outcomes and messages, read without following a link (the run's folder is untrusted);
    empty when absent or malformed."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError:
        return {}, {}
    with os.fdopen(fd) as f:
        try:
            data = json.loads(f.read(64 * 2**20))
        except (json.JSONDecodeError, UnicodeDecodeError):
            return {}, {}
    if not isinstance(data, dict):
        return {}, {}
    parts: list[dict[str, str]] = []
    for key in ("outcomes", "messages"):
        part = data.get(key)
        parts.append({str(k): str(v) for k, v in part.items()} if isinstance(part, dict) else {})
    return parts[0], parts[1]
