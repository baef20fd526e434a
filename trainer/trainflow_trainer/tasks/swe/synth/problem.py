"""Problem statements from templates and the failing tests' output, and a difficulty estimate per bug.

The statement names what fails and how (the failing tests' names and crash messages), never where the bug
is: the mutated function and file are the answer. Difficulty (0 easy … 3 hard) adds one point for each of:
more than one bug combined, a change of more than four lines, a kind that leaves no local trace to spot
(removed or reordered statements), and few failing tests (≤ 2: little signal about the cause).
"""

from __future__ import annotations

import random

from .mutations import Mutation

TEMPLATES = (
    "After building {pkg} {ver} from source, some of its behaviour is broken. Running the test suite, "
    "{n} test(s) fail, for example:\n\n{tests}\n\nThe first failure reads:\n\n```\n{message}\n```\n\n"
    "Find the cause in the library's code and fix it, without changing the tests.",
    "Bug report: {pkg} ({ver}) gives wrong results.\n\nThese tests used to pass and now fail:\n\n{tests}\n\n"
    "Error output:\n\n```\n{message}\n```\n\nPlease fix the library so that they pass again.",
    "{pkg} {ver}: a regression.\n\n{n} test(s) fail, among them:\n\n{tests}\n\nwith\n\n```\n{message}\n```\n\n"
    "The tests are right; the code is not. Make the failing tests pass and keep the others passing.",
)
HARD_KINDS = frozenset({"remove_condition", "remove_loop", "remove_assignment", "shuffle_statements"})
MAX_TESTS_SHOWN = 5


def problem_statement(pkg: str, ver: str, f2p: list[str], messages: dict[str, str], rng: random.Random) -> str:
    shown = f2p[:MAX_TESTS_SHOWN]
    tests = "\n".join(f"- `{t}`" for t in shown)
    if len(f2p) > len(shown):
        tests += f"\n- … and {len(f2p) - len(shown)} more"
    message = next((messages[t] for t in f2p if messages.get(t)), "(no message)")
    message = "\n".join(message.strip().splitlines()[-12:])[:1500]
    return rng.choice(TEMPLATES).format(pkg=pkg, ver=ver, n=len(f2p), tests=tests, message=message)


def difficulty(muts: list[Mutation], diff: str, f2p: list[str], p2p: list[str]) -> tuple[int, dict]:
    changed = sum(1 for ln in diff.splitlines() if ln[:1] in "+-" and not ln.startswith(("+++", "---")))
    features = {
        "bugs": len(muts),
        "kinds": [m.kind for m in muts],
        "changed_lines": changed,
        "fail_to_pass": len(f2p),
        "pass_to_pass": len(p2p),
    }
    level = int(len(muts) > 1) + int(changed > 4) + int(any(m.kind in HARD_KINDS for m in muts)) + int(len(f2p) <= 2)
    return min(level, 3), features
