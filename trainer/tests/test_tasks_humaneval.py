"""HumanEval in the sandbox: every canonical solution passes and a planted wrong solution per task fails.

The wrong solution is the canonical one with its return value perturbed (a number +1, a bool negated, a
string or sequence extended, …): plausible code that differs only in its results, which only the unit
tests can tell apart. 328 sandboxed programs, run 4 at a time (each spends most of its time starting).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest

from trainflow_trainer.sandbox import Limits, Sandbox
from trainflow_trainer.tasks import humaneval_tasks, load_tasks, verify, verify_code

PERTURB = """

def _perturb(r):
    if isinstance(r, bool):
        return not r
    if isinstance(r, (int, float)):
        return r + 1
    if isinstance(r, str):
        return r + "x"
    if isinstance(r, (list, tuple)):
        return type(r)([*r, -1])
    if r is None:
        return 0
    return None


_canonical = {name}


def {name}(*args, **kwargs):
    return _perturb(_canonical(*args, **kwargs))
"""


@pytest.fixture(scope="module")
def tasks():
    return humaneval_tasks()


@pytest.fixture(scope="module")
def sandbox():
    return Sandbox(Limits(timeout_s=20))


def test_all_164_problems_from_the_package(tasks):
    assert len(tasks) == 164
    assert [t.id for t in tasks] == [f"HumanEval/{i}" for i in range(164)]
    assert len(load_tasks({"family": "humaneval", "count": 5})) == 5
    t = tasks[0]
    assert t.verifier["entry_point"] == "has_close_elements" and "def check(" in t.verifier["test"]
    assert "```python" in t.prompt[0]["content"] and t.tools[0]["function"]["name"] == "python"


def test_canonical_solutions_pass_and_planted_wrong_ones_fail(tasks, sandbox):
    def both(task):
        body = task.meta["canonical_solution"]
        good = verify_code(task, body, sandbox)
        bad = verify_code(task, body + PERTURB.format(name=task.verifier["entry_point"]), sandbox)
        return task.id, good, bad

    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(both, tasks))
    failing = [(tid, g.reason) for tid, g, _ in results if not g.passed]
    assert not failing, f"canonical solutions that fail: {failing}"
    passing_wrong = [tid for tid, _, b in results if b.passed]
    assert not passing_wrong, f"planted wrong solutions that pass: {passing_wrong}"
    assert all(g.reward == 1.0 and b.reward == 0.0 for _, g, b in results)
    assert all(g.run.confinement == sandbox.confinement for _, g, _ in results)


def test_a_full_function_in_a_code_block_is_verified(tasks, sandbox):
    task = tasks[2]  # truncate_number
    reply = "Here it is:\n```python\ndef truncate_number(number: float) -> float:\n    return number % 1.0\n```"
    assert verify(task, [{"role": "assistant", "content": reply}], sandbox).passed
    wrong = "```python\ndef truncate_number(number: float) -> float:\n    return number\n```"
    v = verify(task, wrong, sandbox)
    assert not v.passed and v.reward == 0.0 and v.run is not None and "AssertionError" in v.run.stderr


def test_hostile_solutions_are_stopped_scored_zero_and_leave_the_host_untouched(tasks, tmp_path):
    import os
    import socket
    import time

    from trainflow_trainer.sandbox import confinement as cf

    task = tasks[2]  # truncate_number: each hostile solution is correct apart from its hostility
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    server.settimeout(0.1)
    port = server.getsockname()[1]
    os.chmod(tmp_path, 0o777)
    canary = tmp_path / "escaped.txt"
    correct = "    return number % 1.0\n"
    hostile = {
        "network": f"    import socket\n    socket.create_connection(('127.0.0.1', {port}), timeout=1)\n" + correct,
        "write outside": f"    open({str(canary)!r}, 'w').write('x')\n" + correct,
        "fork bomb": "    import os\n    while True:\n        try:\n            os.fork()\n        except OSError:\n"
        "            pass\n",
        "endless loop": "    while True:\n        pass\n",
    }
    sandbox = Sandbox(Limits(timeout_s=2, max_processes=16))
    assert verify_code(task, correct, sandbox).passed
    t0 = time.monotonic()
    try:
        verdicts = {name: verify_code(task, code, sandbox) for name, code in hostile.items()}
        with pytest.raises(socket.timeout):
            server.accept()
    finally:
        server.close()
    assert {n: v.reward for n, v in verdicts.items()} == {n: 0.0 for n in hostile}
    runs = {n: v.run for n, v in verdicts.items() if v.run is not None}
    assert runs.keys() == verdicts.keys()  # every hostile program ran (and was stopped)
    assert runs["fork bomb"].timed_out and runs["endless loop"].timed_out
    assert time.monotonic() - t0 < 15
    assert not canary.exists()
    uids = {r.uid for r in runs.values()}
    assert None not in uids
    assert [p for p in cf._pids() if cf._uid_of(p) in uids and cf._state_of(p) != "Z"] == []
