"""Synthesise validated SWE instances from real PyPI packages, offline after the downloads.

Per package: fetch the sdist, build its venv (pytest and the package's dependencies, from PyPI through
pip's cache), run the suite twice on the clean tree (a test whose outcome differs is flaky and dropped; only
tests passing both times count), then for sampled (function, kind, site) mutations: apply it, run the suite,
keep it when ≥ 1 test fails (FAIL_TO_PASS) and ≥ 1 still passes (PASS_TO_PASS) and the run did not time out.
Then combinations of two validated bugs in different functions of one file, validated the same way. Instances
are deduplicated by their bug's diff; the problem statement comes from templates and the failing tests'
output; difficulty is estimated from the bug (problem.py).
"""

from __future__ import annotations

import hashlib
import json
import random
import shutil
import sys
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from ..environment import SweEnvironment, build_venv, populate
from ..instance import SweInstance, write_instances
from ..testrun import PASSING, TEST_LIMITS, run_tests
from . import mutations as mu
from .package import DEFAULT_TEST_REQUIREMENTS, Package, fetch_sdist, inspect_package, parse_spec, repo_name
from .problem import difficulty, problem_statement


@dataclass
class Bug:
    mutations: list[mu.Mutation]
    path: str
    diff: str  # clean -> buggy (the setup patch)
    fix: str  # buggy -> clean (the gold patch)
    f2p: list[str]
    p2p: list[str]
    messages: dict[str, str]


@dataclass
class PackageReport:
    package: str
    instances: int = 0
    candidates: int = 0
    validated_single: int = 0
    validated_combined: int = 0
    rejected: dict[str, int] = field(default_factory=dict)
    flaky_tests: int = 0
    stable_passing: int = 0
    suite_s: float = 0.0
    seconds: float = 0.0
    error: str | None = None


def log(msg: str) -> None:
    print(f"[synthesize] {msg}", file=sys.stderr, flush=True)


class Validator:
    """Runs a package's suite in the sandbox on a tree with some files replaced."""

    def __init__(self, pkg: Package, venv: Path):
        probe = SweInstance(
            instance_id=f"{pkg.name}-probe",
            repo=pkg.name,
            patch="",
            problem_statement="probe",
            FAIL_TO_PASS=["probe"],
            environment=pkg.environment(),
        )
        self.pkg, self.env = pkg, SweEnvironment(probe, pkg.tree, venv)
        self.sandbox = self.env.sandbox()
        self.limits = TEST_LIMITS

    def run(self, files: dict[str, str]) -> tuple[dict[str, str], dict[str, str], bool]:
        """(outcomes, failure messages, timed out) of the suite on the clean tree with `files` replaced."""
        with self.sandbox.workspace() as ws:
            populate(ws, self.pkg.tree)
            ws.write(dict(files))
            tr = run_tests(self.env, self.sandbox, ws, list(self.pkg.test_paths), self.limits)
        outcomes = {k: v for k, v in tr.outcomes.items() if "::" in k}
        return outcomes, tr.messages, tr.run.timed_out


def stable_passing(v: Validator, report: PackageReport) -> set[str]:
    t0 = time.monotonic()
    a, _, to1 = v.run({})
    report.suite_s = time.monotonic() - t0
    b, _, to2 = v.run({})
    if to1 or to2:
        raise RuntimeError("the clean suite timed out")
    flaky = {t for t in a.keys() | b.keys() if a.get(t) != b.get(t)}
    report.flaky_tests = len(flaky)
    passing = {t for t in a if a[t] in PASSING and t not in flaky and Path(v.pkg.tree, t.split("::")[0]).is_file()}
    report.stable_passing = len(passing)
    # a bugged run may take longer (slower paths, retries): room, but a hang is cut short
    v.limits = TEST_LIMITS.with_(timeout_s=max(30.0, 6 * report.suite_s))
    return passing


def validate(v: Validator, passing: set[str], muts: list[mu.Mutation], report: PackageReport) -> Bug | None:
    path = muts[0].path
    clean = (v.pkg.tree / path).read_text()
    code: str | None = clean
    for m in muts:
        code = mu.apply(code, m) if code is not None else None
    if code is None:
        report.rejected["does not apply"] = report.rejected.get("does not apply", 0) + 1
        return None
    outcomes, messages, timed_out = v.run({path: code})
    if timed_out:
        report.rejected["timed out"] = report.rejected.get("timed out", 0) + 1
        return None
    f2p = sorted(t for t in passing if outcomes.get(t) not in PASSING)
    p2p = sorted(t for t in passing if outcomes.get(t) in PASSING)
    if not f2p or not p2p:
        why = "no FAIL_TO_PASS test" if not f2p else "no PASS_TO_PASS test"
        report.rejected[why] = report.rejected.get(why, 0) + 1
        return None
    return Bug(muts, path, mu.unified_diff(path, clean, code), mu.unified_diff(path, code, clean), f2p, p2p, messages)


def candidates(pkg: Package, rng: random.Random, limit: int) -> list[mu.Mutation]:
    """Sampled mutations spread over functions and kinds (one site each)."""
    pool: list[tuple[mu.Mutation, int]] = []
    for rel in pkg.sources:
        pool.extend(mu.sites(rel, (pkg.tree / rel).read_text(errors="replace")))
    rng.shuffle(pool)
    by_kind: dict[str, list[tuple[mu.Mutation, int]]] = {}
    for m, n in pool:
        by_kind.setdefault(m.kind, []).append((m, n))
    out: list[mu.Mutation] = []
    seen_fn: dict[str, int] = {}
    while len(out) < limit and any(by_kind.values()):
        for kind in mu.KINDS:  # round robin over kinds, so every kind is represented
            if by_kind.get(kind) and len(out) < limit:
                m, n = by_kind[kind].pop()
                fn = f"{m.path}:{m.function}"
                if seen_fn.get(fn, 0) >= 2:  # at most two bugs per function: spread over the code
                    continue
                seen_fn[fn] = seen_fn.get(fn, 0) + 1
                out.append(mu.Mutation(m.path, m.function, m.kind, rng.randrange(n)))
    return out


def synthesize_package(
    spec: str,
    out_dir: Path,
    per_package: int,
    max_candidates: int,
    combine: int,
    seed: int,
    test_requirements: tuple[str, ...],
    deadline: float | None,
) -> tuple[list[SweInstance], PackageReport]:
    name, version = parse_spec(spec)
    report = PackageReport(package=spec)
    t0 = time.monotonic()
    sdist = fetch_sdist(name, version, out_dir / "sdists")
    pkg = inspect_package(name, version, sdist, out_dir / ".scratch" / f"{name}-{version}", test_requirements)
    log(f"{spec}: {len(pkg.sources)} modules, tests in {pkg.test_paths}; building the venv")
    venv = build_venv(pkg.environment())
    v = Validator(pkg, venv)
    passing = stable_passing(v, report)
    log(f"{spec}: suite {report.suite_s:.1f}s, {len(passing)} stable passing tests, {report.flaky_tests} flaky")
    rng = random.Random(f"trainflow-synth/{seed}/{spec}")
    bugs: list[Bug] = []
    seen: set[str] = set()
    for m in candidates(pkg, rng, max_candidates):
        if len(bugs) >= per_package - combine or (deadline and time.monotonic() > deadline):
            break
        report.candidates += 1
        bug = validate(v, passing, [m], report)
        verdict = f"{len(bug.f2p)} FAIL_TO_PASS" if bug else "rejected"
        log(f"{spec}: candidate {report.candidates} {m.key}: {verdict}")
        if bug and _digest(bug.diff) not in seen:
            seen.add(_digest(bug.diff))
            bugs.append(bug)
    report.validated_single = len(bugs)
    singles = list(bugs)
    pairs = [(a, b) for i, a in enumerate(singles) for b in singles[i + 1 :] if _combinable(a, b)]
    rng.shuffle(pairs)
    for a, b in pairs:
        if len(bugs) >= per_package or (deadline and time.monotonic() > deadline):
            break
        report.candidates += 1
        bug = validate(v, passing, [*a.mutations, *b.mutations], report)
        if bug and _digest(bug.diff) not in seen:
            seen.add(_digest(bug.diff))
            bugs.append(bug)
            report.validated_combined += 1
    instances = [make_instance(pkg, bug, rng) for bug in bugs]
    report.instances = len(instances)
    report.seconds = time.monotonic() - t0
    log(f"{spec}: {len(instances)} instances from {report.candidates} candidates in {report.seconds:.0f}s")
    return instances, report


def _combinable(a: Bug, b: Bug) -> bool:
    fa = {m.function for m in a.mutations}
    fb = {m.function for m in b.mutations}
    return a.path == b.path and not fa & fb


def _digest(diff: str) -> str:
    """Identity of a bug: its diff without the hunk line numbers and context (the change itself)."""
    changed = [ln for ln in diff.splitlines() if ln[:1] in "+-" and not ln.startswith(("+++", "---"))]
    return hashlib.sha256("\n".join(changed).encode()).hexdigest()


def make_instance(pkg: Package, bug: Bug, rng: random.Random) -> SweInstance:
    kinds = [m.kind for m in bug.mutations]
    iid = f"{pkg.name}__{pkg.version}.{'+'.join(kinds)}.{_digest(bug.diff)[:8]}"
    test_files = sorted({t.split("::", 1)[0] for t in bug.f2p})
    level, features = difficulty(bug.mutations, bug.diff, bug.f2p, bug.p2p)
    return SweInstance(
        instance_id=iid,
        repo=repo_name(pkg),
        base_commit=pkg.version,
        patch=bug.fix,
        test_patch="",
        problem_statement=problem_statement(pkg.name, pkg.version, bug.f2p, bug.messages, rng),
        FAIL_TO_PASS=bug.f2p,
        PASS_TO_PASS=bug.p2p,
        created_at=datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        image_name=None,
        snapshot=pkg.snapshot(f"sdists/{pkg.sdist.name}", bug.diff),
        test_cmd="python -m pytest",
        environment=pkg.environment(),
        test_files=test_files,
        difficulty=level,
        difficulty_features=features,
        mutations=[m.key for m in bug.mutations],
    )


def synthesize(
    packages: list[str],
    out: Path,
    per_package: int = 20,
    max_candidates: int = 80,
    combine: int = 4,
    seed: int = 0,
    test_requirements: tuple[str, ...] = DEFAULT_TEST_REQUIREMENTS,
    time_budget_s: float | None = None,
) -> dict:
    """Writes the instances to `out` (sdists next to it, in sdists/) and returns the run's report."""
    t0 = time.monotonic()
    deadline = t0 + time_budget_s if time_budget_s else None
    out_dir = out.resolve().parent
    instances: list[SweInstance] = []
    reports: list[PackageReport] = []
    for spec in packages:
        try:
            got, rep = synthesize_package(
                spec, out_dir, per_package, max_candidates, combine, seed, test_requirements, deadline
            )
        except Exception as e:  # one bad package is reported, the others still run
            rep = PackageReport(package=spec, error=f"{type(e).__name__}: {e}")
            got = []
            log(f"{spec}: skipped: {rep.error}")
        instances.extend(got)
        reports.append(rep)
    write_instances(out, instances)
    shutil.rmtree(out_dir / ".scratch", ignore_errors=True)  # the unpacked sources; the sdists stay
    summary = {
        "out": str(out),
        "instances": len(instances),
        "packages": [r.__dict__ for r in reports],
        "packages_with_instances": sum(r.instances > 0 for r in reports),
        "seconds": round(time.monotonic() - t0, 1),
    }
    return summary


def summary_line(summary: dict) -> str:
    return "TRAINFLOW_SYNTH " + json.dumps(summary)
