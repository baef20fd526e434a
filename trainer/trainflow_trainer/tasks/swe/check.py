"""`trainflow tasks check FILE`: every instance's environment builds, its base tree fails each FAIL_TO_PASS test,
its gold patch passes every test (reward 1), and an empty patch scores 0. Unusable instances are reported with
their reason. One JSON line per instance (`TRAINFLOW_CHECK {...}`) and a summary; exit 0 iff all are valid."""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from . import load_instances
from .environment import build_environment
from .grade import grade_patch
from .testrun import PASSING


@dataclass
class CheckResult:
    instance_id: str
    ok: bool
    problems: list[str] = field(default_factory=list)
    base_failing: int = 0  # FAIL_TO_PASS tests failing on the base tree
    gold_reward: float | None = None
    empty_reward: float | None = None
    seconds: float = 0.0


def check_file(path: str | Path, count: int | None = None, emit: bool = True) -> dict:
    t0 = time.monotonic()
    usable, unusable = load_instances(path)
    if count is not None:
        usable = usable[:count]
    results: list[CheckResult] = []
    for inst in usable:
        t = time.monotonic()
        r = CheckResult(inst.instance_id, ok=False)
        try:
            env = build_environment(inst)
            empty = grade_patch(env, "")  # the base tree as it is: what an agent that changes nothing gets
            r.empty_reward = empty.reward
            r.base_failing = sum(o not in PASSING for o in empty.fail_to_pass.values())
            if r.base_failing != len(inst.FAIL_TO_PASS):
                passing = [t for t, o in empty.fail_to_pass.items() if o in PASSING]
                r.problems.append(f"the base tree passes FAIL_TO_PASS test(s) {passing[:3]}")
            if empty.reward != 0.0:
                r.problems.append(f"an empty patch scores {empty.reward}, not 0")
            gold = grade_patch(env, inst.patch)
            r.gold_reward = gold.reward
            if not gold.passed:
                r.problems.append(f"the gold patch does not pass: {gold.reason}")
        except Exception as e:  # an instance that cannot be built or graded is invalid, not fatal
            r.problems.append(f"{type(e).__name__}: {e}")
        r.ok = not r.problems
        r.seconds = round(time.monotonic() - t, 2)
        results.append(r)
        if emit:
            print("TRAINFLOW_CHECK " + json.dumps(asdict(r)), flush=True)
    summary = {
        "file": str(path),
        "checked": len(results),
        "valid": sum(r.ok for r in results),
        "invalid": [r.instance_id for r in results if not r.ok],
        "problems": {r.instance_id: r.problems for r in results if not r.ok},  # why each was invalid
        "unusable": [{"where": w, "reason": why} for w, why in unusable],
        "seconds": round(time.monotonic() - t0, 1),
    }
    return summary
