"""Verifiers: score an agent's final response to a task with a reward of 1 (passed) or 0.

Kinds (the task's `verifier.kind`):
  answer      {"expected": "42", "source": "final" | "tool"}: with source final (the default) the final
              assistant message states the answer as "The answer is 42." (the demo SFT data's phrasing)
              or "ANSWER: 42"; with source tool the answer is what the agent's last tool call printed
              (the agent must compute it with a program, not state it). Compared after trimming spaces
              and a final full stop.
  unit_tests  {"test": SOURCE, "prefix": SOURCE?, "entry_point": NAME?, "timeout_s": S?}: the program
              prefix + the response's code + test [+ check(entry_point)] runs in the sandbox and passes
              when it exits 0 within its limits. The response's code is the last ```python block of the
              message (or the whole message); an indented one is a function body that continues the
              prefix (HumanEval's completion form), an unindented one a complete definition that follows
              it (the prefix's docstring-only function is then redefined).
  swe_tests   {"partial_credit": bool?}: a SWE task (tasks/swe/): the episode's final repository copy (the
              `workspace` argument, a host folder) is graded by tasks/swe/grade.py: FAIL_TO_PASS and
              PASS_TO_PASS run with the original test files restored; `details` keeps every test's outcome.
A program that is killed, times out, opens a socket or writes outside its folder fails (reward 0): the
sandbox turns each of those into an error exit.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from ..sandbox import Limits, RunResult, Sandbox
from .task import Task

ANSWER_RES = (re.compile(r"The answer is\s*(.+?)\s*\.?\s*$", re.S | re.I), re.compile(r"ANSWER:\s*(.+?)\s*$", re.S))
CODE_BLOCK_RE = re.compile(r"```(?:python|py)?[ \t]*\n(.*?)```", re.S)


@dataclass
class Verdict:
    reward: float
    passed: bool
    reason: str
    run: RunResult | None = None
    details: dict | None = None  # swe_tests: the Grade (per-test outcomes, changed and ignored files)

    @property
    def tests(self) -> dict[str, str] | None:
        """Each graded test's outcome (swe_tests: FAIL_TO_PASS and PASS_TO_PASS, test id -> passed|failed|...);
        None for verifiers that run no named tests. The episode carries it into the ledger with the trajectory."""
        if not self.details or "fail_to_pass" not in self.details:
            return None
        return {**self.details.get("pass_to_pass", {}), **self.details["fail_to_pass"]}

    def to_dict(self) -> dict:
        return {
            "reward": self.reward,
            "passed": self.passed,
            "reason": self.reason,
            "run": self.run.to_dict() if self.run else None,
            "details": self.details,
        }


def final_text(response: str | list[dict]) -> str:
    """The final assistant message's text, from a string or a whole conversation."""
    if isinstance(response, str):
        return response
    for m in reversed(response):
        if m.get("role") == "assistant":
            return m.get("content") or ""
    return ""


def last_tool_output(response: str | list[dict]) -> str | None:
    """What the last tool call of a conversation returned (None when there was none)."""
    if isinstance(response, str):
        return None
    for m in reversed(response):
        if m.get("role") == "tool":
            return m.get("content") or ""
    return None


def final_answer(text: str) -> str | None:
    for rx in ANSWER_RES:
        m = rx.search(text.strip())
        if m:
            return _normalise(m.group(1))
    return None


def _normalise(s: str) -> str:
    s = " ".join(s.strip().split())
    return s[:-1].rstrip() if s.endswith(".") else s


def extract_code(text: str) -> str:
    blocks = CODE_BLOCK_RE.findall(text)
    return blocks[-1] if blocks else text


def unit_test_program(verifier: dict, code: str) -> str:
    prefix = verifier.get("prefix", "")
    first = next((line for line in code.splitlines() if line.strip()), "")
    if first[:1] in (" ", "\t"):
        program = prefix + code  # a function body continuing the prefix's signature
    else:
        program = prefix + ("\n\n" if prefix else "") + code
    program += "\n\n" + verifier["test"] + "\n"
    if verifier.get("entry_point"):
        program += f"\ncheck({verifier['entry_point']})\n"
    return program


def verify(
    task: Task, response: str | list[dict], sandbox: Sandbox | None = None, workspace: str | None = None
) -> Verdict:
    """Scores a response. `workspace`: the episode's repository copy on the host (swe_tests tasks only)."""
    v = task.verifier
    if v["kind"] == "swe_tests":
        return verify_swe(task, workspace)
    text = final_text(response)
    if v["kind"] == "answer":
        got: str | None
        if v.get("source") == "tool":
            out = last_tool_output(response)
            if out is None:
                return Verdict(0.0, False, "no tool call: the answer must be computed with the python tool")
            got = _normalise(out)
        else:
            got = final_answer(text)
        if got is None:
            return Verdict(0.0, False, "no final answer ('The answer is ...' or 'ANSWER: ...')")
        ok = got == _normalise(v["expected"])
        return Verdict(float(ok), ok, "correct" if ok else f"answered {got!r}, expected {v['expected']!r}")
    if v["kind"] == "unit_tests":
        return verify_code(task, extract_code(text), sandbox)
    raise ValueError(f"task {task.id}: unknown verifier kind {v['kind']!r}")


def verify_swe(task: Task, workspace: str | None) -> Verdict:
    """Grades a swe task's final workspace (its own sandbox: the instance's venv, a fresh grading tree)."""
    from pathlib import Path

    from .swe import environment_for, grade_workspace

    if workspace is None:
        return Verdict(0.0, False, "a swe task is graded on the episode's workspace, and none was given")
    partial = bool(task.verifier.get("partial_credit"))
    grade = grade_workspace(environment_for(task), Path(workspace), partial_credit=partial)
    return Verdict(grade.reward, grade.passed, grade.reason, grade.run, grade.to_dict())


def verify_code(task: Task, code: str, sandbox: Sandbox | None = None) -> Verdict:
    """Runs the task's unit tests against `code` (a completion or a complete solution) in the sandbox."""
    sandbox = sandbox or Sandbox()
    v = task.verifier
    limits = sandbox.limits.with_(timeout_s=float(v["timeout_s"])) if v.get("timeout_s") else None
    run = sandbox.run_python(unit_test_program(v, code), files=task.environment.get("files"), limits=limits)
    if run.ok:
        return Verdict(1.0, True, "tests passed", run)
    if run.timed_out:
        reason = f"timed out after {run.duration_s:.1f}s"
    elif run.killed:
        reason = f"killed by signal {run.signal}"
    else:
        last = run.stderr.strip().splitlines()[-1:] or [""]
        reason = f"tests failed (exit {run.exit_code}): {last[0][:200]}"
    return Verdict(0.0, False, reason, run)


ANSWER_FILE = "answer.txt"
SOLUTION_FILE = "solution.py"


def verify_workspace(task: Task, workspace: str, sandbox: Sandbox | None = None) -> Verdict:
    """The verdict on an agent's final workspace (a bring-your-own agent's only output: what it says is ignored).

    swe_tests   the repository copy is graded by tasks/swe/grade.py (verify_swe);
    answer      the workspace's answer.txt holds the answer (compared like a final answer's);
    unit_tests  the workspace's `verifier.file` (default solution.py) is the code the tests run against."""
    v = task.verifier
    if v["kind"] == "swe_tests":
        return verify_swe(task, workspace)
    name = ANSWER_FILE if v["kind"] == "answer" else v.get("file", SOLUTION_FILE)
    path = Path(workspace, name)
    if path.is_symlink() or not path.is_file():
        return Verdict(0.0, False, f"the workspace has no {name}")
    text = path.read_bytes()[: 1 << 20].decode("utf-8", errors="replace")
    if v["kind"] == "answer":
        got = _normalise(text)
        ok = got == _normalise(v["expected"])
        return Verdict(float(ok), ok, "correct" if ok else f"{name} holds {got[:40]!r}, expected {v['expected']!r}")
    if v["kind"] == "unit_tests":
        return verify_code(task, text, sandbox)
    raise ValueError(f"task {task.id}: unknown verifier kind {v['kind']!r}")


__all__ = [
    "verify_workspace",
    "Verdict",
    "verify",
    "verify_code",
    "verify_swe",
    "final_answer",
    "last_tool_output",
    "extract_code",
    "unit_test_program",
    "Limits",
]
