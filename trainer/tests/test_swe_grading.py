"""SWE tasks: per-episode environments in the real sandbox (bwrap), grading, and agents that try to cheat.

A small repository (a package and its tests) with one bug stands in for a real one; the venv is real (pytest
from PyPI through pip's cache, built once into the SWE cache), every command an "agent" runs goes through the
episode's sandbox, and every grade runs the real tests. An agent that deletes or edits the failing tests,
reads the hidden tests or writes outside its workspace must score 0, and the host must be untouched.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import os
from pathlib import Path

import pytest

from trainflow_trainer.sandbox import confinement as cf
from trainflow_trainer.tasks import Task, load_tasks, verify
from trainflow_trainer.tasks.swe import (
    SweInstance,
    build_environment,
    grade_patch,
    instance_task,
    load_instances,
    write_instances,
)
from trainflow_trainer.tasks.swe.instance import EnvironmentSpec, Snapshot

pytestmark = pytest.mark.skipif(not cf.bwrap_works()[0], reason="needs bwrap: " + cf.bwrap_works()[1])

GOOD = """def add(a, b):
    return a + b


def clamp(x, lo, hi):
    if x < lo:
        return lo
    if x > hi:
        return hi
    return x
"""
BUGGY = GOOD.replace("return a + b", "return a - b")
HIDDEN_TEST = """from calc import add


def test_add():
    assert add(2, 3) == 5


def test_add_zero():
    assert add(0, 7) == 7
"""
OTHER_TEST = """from calc import clamp


def test_clamp_low():
    assert clamp(-1, 0, 9) == 0


def test_clamp_high():
    assert clamp(12, 0, 9) == 9
"""
F2P = ["tests/test_add.py::test_add", "tests/test_add.py::test_add_zero"]
P2P = ["tests/test_clamp.py::test_clamp_low", "tests/test_clamp.py::test_clamp_high"]


def diff(path: str, a: str, b: str) -> str:
    lines = difflib.unified_diff(a.splitlines(True), b.splitlines(True), f"a/{path}", f"b/{path}")
    return f"diff --git a/{path} b/{path}\n" + "".join(lines)


@pytest.fixture(scope="module")
def instance(tmp_path_factory) -> SweInstance:
    repo = tmp_path_factory.mktemp("calc-repo")
    (repo / "calc").mkdir()
    (repo / "calc" / "__init__.py").write_text(GOOD)
    (repo / "tests").mkdir()
    (repo / "tests" / "test_add.py").write_text(HIDDEN_TEST)
    (repo / "tests" / "test_clamp.py").write_text(OTHER_TEST)
    return SweInstance(
        instance_id="calc__bug.add",
        repo="example/calc",
        base_commit="v1",
        patch=diff("calc/__init__.py", BUGGY, GOOD),
        problem_statement="add(2, 3) returns -1 instead of 5.",
        FAIL_TO_PASS=F2P,
        PASS_TO_PASS=P2P,
        snapshot=Snapshot(kind="dir", path=str(repo), setup_patch=diff("calc/__init__.py", GOOD, BUGGY)),
        environment=EnvironmentSpec(requirements=["pytest==8.3.4"]),
    )


@pytest.fixture(scope="module")
def env(instance):
    return build_environment(instance)


def tree_digest(root: Path) -> str:
    h = hashlib.sha256()
    for dirpath, dirnames, filenames in sorted(os.walk(root)):
        dirnames.sort()
        for name in sorted(filenames):
            p = Path(dirpath) / name
            h.update(str(p.relative_to(root)).encode())
            if not p.is_symlink():
                h.update(p.read_bytes())
    return h.hexdigest()


def test_the_episode_sees_a_copy_without_the_hidden_tests_and_the_venv(env):
    with env.open_episode() as ep:
        r = ep.run("ls tests; python -c 'import calc, pytest; print(calc.__file__, pytest.__version__)'")
        assert r.ok, r.stderr
        assert "test_clamp.py" in r.stdout and "test_add.py" not in r.stdout
        assert "/sandbox/calc/__init__.py 8.3.4" in r.stdout
        r = ep.run("python -m pytest -q tests/test_clamp.py")
        assert r.ok and "2 passed" in r.stdout, r.stdout + r.stderr


def test_the_base_tree_fails_the_gold_patch_passes_an_empty_patch_scores_0(env, instance):
    gold = grade_patch(env, instance.patch)
    assert (gold.reward, gold.passed) == (1.0, True), gold.reason
    assert set(gold.fail_to_pass.values()) == {"passed"} and set(gold.pass_to_pass.values()) == {"passed"}
    empty = grade_patch(env, "")
    assert empty.reward == 0.0 and set(empty.fail_to_pass.values()) == {"failed"}
    assert set(empty.pass_to_pass.values()) == {"passed"}


def test_a_fix_made_with_the_agents_commands_scores_1_and_keeps_per_test_outcomes(env, instance):
    task = instance_task(instance)
    with env.open_episode() as ep:
        assert ep.run("sed -i 's/return a - b/return a + b/' calc/__init__.py").ok
        v = verify(task, [], workspace=ep.path)
    assert v.reward == 1.0 and v.details is not None
    assert v.details["changed"] == ["calc/__init__.py"]
    assert v.details["fail_to_pass"] == {t: "passed" for t in F2P}
    json.dumps(v.to_dict())  # the verdict travels with the trajectory


def test_partial_credit_is_the_share_of_fail_to_pass_when_pass_to_pass_holds(env, instance, tmp_path):
    half = GOOD.replace("return a + b", "return a + b if a else a - b")  # fixes test_add, not test_add_zero
    g = grade_patch(env, diff("calc/__init__.py", BUGGY, half), partial_credit=True)
    assert g.reward == 0.5 and not g.passed
    assert grade_patch(env, diff("calc/__init__.py", BUGGY, half)).reward == 0.0
    # the config key tasks.partial_credit reaches the verifier through load_tasks
    from trainflow_trainer.contract import TasksConfig

    write_instances(tmp_path / "swe.jsonl", [instance])
    for partial, want in ((True, 0.5), (False, 0.0)):
        spec = {"family": "swe", "path": str(tmp_path / "swe.jsonl"), "partial_credit": partial}
        (task,) = load_tasks(TasksConfig.model_validate(spec))
        with env.open_episode() as ep:
            ep.write({"calc/__init__.py": half})
            assert verify(task, [], workspace=ep.path).reward == want
    broke = half.replace("return lo", "return hi")  # and breaks a passing test
    assert grade_patch(env, diff("calc/__init__.py", BUGGY, broke), partial_credit=True).reward == 0.0


# ---- agents that cheat -----------------------------------------------------------------------------------


def grade_after(env, *commands: str):
    with env.open_episode() as ep:
        outs = [ep.run(c) for c in commands]
        return ep.grade(), outs


def test_deleting_the_failing_tests_scores_0(env):
    g, _ = grade_after(env, "rm -rf tests", "printf 'collect_ignore_glob = [\"*\"]\\n' > conftest.py")
    assert g.reward == 0.0 and g.fail_to_pass == {t: "failed" for t in F2P}
    assert "conftest.py" in g.ignored and "tests/test_clamp.py" in g.ignored


def test_editing_the_tests_to_pass_scores_0(env):
    fake = "def test_add():\n    pass\n\n\ndef test_add_zero():\n    pass\n"
    hook = (
        "import pytest\n@pytest.hookimpl(hookwrapper=True)\ndef pytest_runtest_makereport(item, call):\n"
        "    out = yield\n    r = out.get_result()\n    r.outcome = 'passed'\n"
    )
    g, outs = grade_after(
        env,
        f"cat > tests/test_add.py <<'EOF'\n{fake}EOF",
        f"cat > tests/conftest.py <<'EOF'\n{hook}EOF",
        "echo 'import os' > sitecustomize.py; echo 'import sitecustomize' > calc/hack.pth",
        "python -m pytest -q tests",  # the agent's own run passes ...
    )
    assert "4 passed" in outs[-1].stdout
    assert g.reward == 0.0 and g.fail_to_pass == {t: "failed" for t in F2P}  # ... the grade does not
    assert {"tests/test_add.py", "tests/conftest.py", "sitecustomize.py", "calc/hack.pth"} <= set(g.ignored)


def test_a_real_fix_counts_even_when_the_tests_were_vandalised(env):
    g, _ = grade_after(env, "sed -i 's/a - b/a + b/' calc/__init__.py", "rm tests/test_clamp.py")
    assert g.reward == 1.0 and g.changed == ["calc/__init__.py"]


def test_reading_the_hidden_tests_finds_nothing_and_scores_0(env):
    hidden = env.tree / "tests" / "test_add.py"
    g, outs = grade_after(
        env,
        f"cat {hidden}; ls {env.tree.parent}; cat /proc/1/root{hidden}",
        "find / -name test_add.py -not -path '/proc/*' 2>/dev/null",
        "grep -rl 'def test_add' /sandbox /tmp /var /etc /root /work 2>/dev/null | head",
        f"cp {hidden} tests/test_add.py",
    )
    for r in outs:
        assert "assert add(2, 3) == 5" not in r.stdout
    assert "No such file" in outs[0].stderr
    assert g.reward == 0.0


def test_writing_outside_the_workspace_fails_scores_0_and_leaves_the_host_untouched(env, tmp_path):
    marker = tmp_path / "pwned"
    os.chmod(tmp_path, 0o777)
    venv_before = tree_digest(env.venv)
    tree_before = tree_digest(env.tree)
    g, outs = grade_after(
        env,
        f"echo x > {marker}; echo $?",
        f"echo 'def add(a, b): return a + b' > {env.venv}/lib/python3.11/site-packages/calc.py",
        f"sed -i 's/a - b/a + b/' {env.tree}/calc/__init__.py",
        "echo x > /tmp/outside && echo wrote-tmp",  # a private tmpfs: gone with the sandbox
        "ln -s /etc/passwd calc/passwd.py; ln -s / calc/root",
    )
    assert not marker.exists()
    assert not os.path.exists("/tmp/outside") or Path("/tmp/outside").read_text() != "x\n"
    assert tree_digest(env.venv) == venv_before and tree_digest(env.tree) == tree_before
    assert g.reward == 0.0 and "calc/passwd.py" not in g.changed


def test_a_swe_tasks_file_loads_and_unusable_instances_are_reported_with_reasons(instance, tmp_path):
    path = tmp_path / "swe.jsonl"
    no_snapshot = instance.model_copy(update={"instance_id": "x", "snapshot": None})
    write_instances(path, [instance, no_snapshot])
    with open(path, "a") as f:
        # a SWE-bench row as its HF export spells it: tests as JSON strings, fields trainflow does not know
        row = {**json.loads(instance.to_json()), "instance_id": "y", "version": "1.0", "hints_text": ""}
        row.update(FAIL_TO_PASS=json.dumps(F2P), PASS_TO_PASS=json.dumps(P2P), environment=None)
        f.write(json.dumps(row) + "\n")
        f.write('{"instance_id": "z"}\n')
    usable, bad = load_instances(path)
    assert [i.instance_id for i in usable] == ["calc__bug.add"]
    reasons = dict(bad)
    assert "no repository snapshot" in reasons[f"{path} (x)"]
    assert "no environment spec" in reasons[f"{path} (y)"]
    assert any("repo" in why or "patch" in why for where, why in bad if where.endswith(":4 (z)"))
    from trainflow_trainer.contract import TasksConfig
    from trainflow_trainer.tasks import TaskFormatError

    with pytest.raises(TaskFormatError, match="3 unusable SWE instance"):
        load_tasks(TasksConfig.model_validate({"family": "swe", "path": str(path)}))
    write_instances(path, [instance])
    (task,) = load_tasks(TasksConfig.model_validate({"family": "swe", "path": str(path)}))
    assert task.family == "swe" and Task.from_dict(task.to_dict()).environment["swe"]["instance_id"] == task.id


def test_pr_dataset_filters_drop_by_stars_activity_and_issue_content(instance, tmp_path, capsys):
    from trainflow_trainer.contract import TasksConfig

    rows = [
        {"instance_id": "keep", "repo_stars": 5000, "pr_comments": 3, "pr_review_comments": 2},
        {"instance_id": "few-stars", "repo_stars": 12, "pr_activity": 9},
        {"instance_id": "no-stars", "pr_activity": 9},
        {"instance_id": "quiet-pr", "stars": 900, "pr_activity": 1},
        {"instance_id": "short-issue", "stars": 900, "pr_activity": 9, "problem_statement": "broken"},
        {"instance_id": "screenshot", "stars": 900, "pr_activity": 9, "problem_statement": "see screenshot.png, 42"},
    ]
    path = tmp_path / "prs.jsonl"
    write_instances(path, [instance.model_validate({**instance.model_dump(), **r}) for r in rows])
    filters = {
        "min_stars": 100,
        "min_pr_activity": 4,
        "issue_min_chars": 10,
        "issue_must_match": r"\d",
        "issue_must_not_match": r"screenshot",
    }
    tasks = load_tasks(TasksConfig.model_validate({"family": "swe", "path": str(path), "filters": filters}))
    assert [t.id for t in tasks] == ["keep"]
    err = capsys.readouterr().err
    for iid, why in [
        ("few-stars", "12 stars < 100"),
        ("no-stars", "no star count"),
        ("quiet-pr", "1 < 4"),
        ("short-issue", "6 characters < 10"),
        ("screenshot", "issue_must_not_match"),
    ]:
        assert f"dropped {iid}: filters." in err and why in err
    # without filters every instance loads
    assert len(load_tasks(TasksConfig.model_validate({"family": "swe", "path": str(path)}))) == len(rows)


def test_a_swe_bench_style_test_patch_is_applied_only_when_grading(instance, tmp_path):
    """SWE-bench: the base commit lacks the new tests; test_patch adds them at grading, never in the workspace."""
    repo = tmp_path / "repo"
    (repo / "calc").mkdir(parents=True)
    (repo / "calc" / "__init__.py").write_text(BUGGY)
    (repo / "tests").mkdir()
    (repo / "tests" / "test_clamp.py").write_text(OTHER_TEST)
    test_patch = (
        "diff --git a/tests/test_add.py b/tests/test_add.py\nnew file mode 100644\n"
        + f"--- /dev/null\n+++ b/tests/test_add.py\n@@ -0,0 +1,{len(HIDDEN_TEST.splitlines())} @@\n"
        + "".join(f"+{ln}\n" for ln in HIDDEN_TEST.splitlines())
    )
    inst = instance.model_copy(
        update={
            "instance_id": "calc__swebench.1",
            "test_patch": test_patch,
            "snapshot": Snapshot(kind="dir", path=str(repo)),
        }
    )
    assert inst.hidden_test_files() == ["tests/test_add.py"]
    env = build_environment(inst)
    with env.open_episode() as ep:
        assert "test_add.py" not in ep.run("ls tests").stdout
        assert ep.grade().reward == 0.0
        ep.write({"calc/__init__.py": GOOD})
        g = ep.grade()
    assert g.reward == 1.0 and g.fail_to_pass == {t: "passed" for t in F2P}
    assert grade_patch(env, inst.patch).reward == 1.0 and grade_patch(env, "").reward == 0.0
