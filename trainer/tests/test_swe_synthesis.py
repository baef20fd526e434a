"""`tasks synthesize` and `tasks check` on a real PyPI package (isodate's sdist, its own test suite), at a small
size: every instance it writes must check out (base tree fails FAIL_TO_PASS, gold passes all, empty scores 0).
The full measured run (≥ 50 instances from 3 packages) is bench/results/swe-synthesis.json."""

from __future__ import annotations

import json
import random

import pytest

from trainflow_trainer.sandbox import confinement as cf
from trainflow_trainer.tasks.swe import load_instances
from trainflow_trainer.tasks.swe.__main__ import main
from trainflow_trainer.tasks.swe.synth import mutations as mu
from trainflow_trainer.tasks.swe.synth.problem import difficulty

pytestmark = pytest.mark.skipif(not cf.bwrap_works()[0], reason="needs bwrap: " + cf.bwrap_works()[1])

SOURCE = '''def f(xs, limit):
    """Doc."""
    total = 0
    for x in xs:
        if x > limit and x != 3:
            total += x * 2
        else:
            total -= 1
    return total
'''


def test_each_kind_changes_the_function_and_compiles():
    sites = {m.kind: n for m, n in mu.sites("m.py", SOURCE)}
    assert set(sites) == set(mu.KINDS)
    rng = random.Random(0)
    for kind, n in sites.items():
        code = mu.apply(SOURCE, mu.Mutation("m.py", "f", kind, rng.randrange(n)))
        assert code is not None and code != SOURCE, kind
        compile(code, "m.py", "exec")
        assert mu.unified_diff("m.py", SOURCE, code).startswith("diff --git a/m.py b/m.py\n--- a/m.py")
    a = mu.Mutation("m.py", "f", "change_operator", 0)
    assert mu.apply(SOURCE, a) == mu.apply(SOURCE, a)  # a mutation is reproducible
    assert mu.apply(SOURCE, mu.Mutation("m.py", "f", "remove_loop", 5)) is None  # no such site
    assert mu.functions(__import__("libcst").parse_module("def g():\n    return 1\n")) == []  # too simple


def test_difficulty_grows_with_combined_bugs_and_hidden_changes():
    one = [mu.Mutation("m.py", "f", "change_operator", 0)]
    two = [*one, mu.Mutation("m.py", "g", "remove_assignment", 0)]
    diff = "-a\n+b\n"
    easy, feats = difficulty(one, diff, ["t1", "t2", "t3"], ["t4"])
    hard, _ = difficulty(two, diff * 3, ["t1"], ["t4"])
    assert easy == 0 and hard == 3 and feats["changed_lines"] == 2


def test_synthesize_then_check_a_small_set_from_a_real_package(tmp_path, capsys):
    out = tmp_path / "swe.jsonl"
    argv = ["synthesize", "--package", "isodate==0.7.2", "--out", str(out)]
    rc = main([*argv, "--per-package", "3", "--max-candidates", "10", "--combine", "1", "--min-instances", "2"])
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1].split(" ", 1)[1])
    assert rc == 0, summary
    instances, unusable = load_instances(out)
    assert len(instances) == summary["instances"] >= 2 and unusable == []
    assert (tmp_path / "sdists" / "isodate-0.7.2.tar.gz").is_file()  # the JSONL and its sdists travel together
    for inst in instances:
        assert inst.FAIL_TO_PASS and inst.PASS_TO_PASS and not set(inst.FAIL_TO_PASS) & set(inst.PASS_TO_PASS)
        assert inst.FAIL_TO_PASS[0].split("::")[0] in inst.problem_statement  # written from the failing tests
        assert inst.snapshot is not None and inst.snapshot.setup_patch and inst.patch
        assert inst.difficulty is not None and inst.environment is not None
    assert len({i.snapshot.setup_patch for i in instances if i.snapshot}) == len(instances)  # deduplicated
    assert main(["check", str(out)]) == 0
    lines = [json.loads(ln.split(" ", 1)[1]) for ln in capsys.readouterr().out.splitlines()]
    checks = [ln for ln in lines if "instance_id" in ln]
    assert len(checks) == len(instances)
    assert all(c["ok"] and c["gold_reward"] == 1.0 and c["empty_reward"] == 0.0 for c in checks)
    assert all(c["base_failing"] >= 1 for c in checks)
    # a broken gold patch is caught
    bad = json.loads(out.read_text().splitlines()[0])
    bad["patch"] = ""
    out.write_text(json.dumps(bad) + "\n")
    assert main(["check", str(out)]) == 1
