"""Task family `swe`: SWE-bench / SWE-smith instances (a repository snapshot, a problem statement, hidden
FAIL_TO_PASS / PASS_TO_PASS tests), their environments built offline without Docker, and their grading.

    instances, unusable = load_instances("tasks.jsonl")          # unusable: [(where, reason)]
    task = instance_task(instances[0])                           # a Task (family swe, verifier swe_tests)
    env = environment_for(task)                                  # built once, cached
    with env.open_episode() as ep:                               # private copy, confined commands
        ep.run("python -m pytest -q tests/test_other.py")
        grade = ep.grade()                                       # Grade: reward, per-test outcomes

The agent sees the prompt and its workspace only: `task.environment["swe"]` holds the whole instance (the gold
patch, the hidden tests' names) and must never be shown to the model or handed to an untrusted agent.
"""

from __future__ import annotations

import sys
from pathlib import Path

from ..task import Task, TaskFormatError
from .environment import (
    EnvironmentError_,
    SweEnvironment,
    SweEpisode,
    build_environment,
    cache_root,
    populate,
    unusable_reason,
)
from .filters import Filters, apply_filters
from .grade import Grade, grade_patch, grade_workspace
from .instance import SweFormatError, SweInstance, is_protected, read_instances, write_instances
from .testrun import TestRun, run_tests

SYSTEM = (
    "You are a software engineer working in a Python repository (your current directory). Fix the issue "
    "described by the user by editing the repository's source files. The tests that check the fix are hidden; "
    "you may run the repository's other tests and your own scripts. When you are done, submit."
)


def resolve_paths(inst: SweInstance, base_dir: Path) -> SweInstance:
    """An instance whose relative snapshot path is taken relative to its JSONL file's folder."""
    if inst.snapshot is not None and not Path(inst.snapshot.path).is_absolute():
        snap = inst.snapshot.model_copy(update={"path": str((base_dir / inst.snapshot.path).resolve())})
        return inst.model_copy(update={"snapshot": snap})
    return inst


def load_instances(path: str | Path) -> tuple[list[SweInstance], list[tuple[str, str]]]:
    """The usable instances of a SWE JSONL file, and (where, reason) for every unusable one."""
    good, bad = read_instances(path)
    usable = []
    for i, inst in enumerate(good):
        inst = resolve_paths(inst, Path(path).resolve().parent)
        why = unusable_reason(inst)
        if why:
            bad.append((f"{path} ({inst.instance_id})", why))
        else:
            usable.append(inst)
        del i
    return usable, bad


def instance_task(inst: SweInstance, partial_credit: bool = False) -> Task:
    return Task(
        id=inst.instance_id,
        family="swe",
        prompt=[{"role": "system", "content": SYSTEM}, {"role": "user", "content": inst.problem_statement}],
        verifier={"kind": "swe_tests", "partial_credit": partial_credit},
        tools=[],  # the agent brings its SWE tool set (bash, file editor, submit)
        environment={"swe": inst.model_dump(mode="json")},
        meta={"difficulty": inst.difficulty if inst.difficulty is not None else 0, "repo": inst.repo},
    )


def swe_tasks(
    path: str | Path, count: int | None = None, partial_credit: bool = False, filters: Filters | None = None
) -> list[Task]:
    """The tasks of a SWE instances file; an error naming every unusable instance when there is one. `filters`
    (tasks.filters) drop instances by stars, PR activity and issue content; each dropped one is logged."""
    usable, bad = load_instances(path)
    if filters is not None:
        usable, dropped = apply_filters(usable, filters)
        for iid, why in dropped:
            print(f"trainflow: tasks.filters dropped {iid}: {why}", file=sys.stderr)
        if not usable and not bad:
            raise TaskFormatError(f"tasks.filters: no instance of {path} passes the filters ({len(dropped)} dropped)")
    if bad:
        lines = "\n".join(f"  {where}: {why}" for where, why in bad[:20])
        more = f"\n  … and {len(bad) - 20} more" if len(bad) > 20 else ""
        raise TaskFormatError(
            f"tasks.path: {len(bad)} unusable SWE instance(s) in {path} "
            f"(check them with `trainflow tasks check {path}`):\n{lines}{more}"
        )
    tasks = [instance_task(i, partial_credit) for i in usable]
    return tasks[:count] if count is not None else tasks


def task_instance(task: Task) -> SweInstance:
    if task.family != "swe" or "swe" not in task.environment:
        raise TaskFormatError(f"task {task.id}: not a swe task (environment.swe holds the instance)")
    return SweInstance.model_validate(task.environment["swe"])


_ENVS: dict[str, SweEnvironment] = {}


def environment_for(task_or_instance: Task | SweInstance) -> SweEnvironment:
    """The built environment of a swe task (built on first use in this process, from the shared cache)."""
    inst = task_instance(task_or_instance) if isinstance(task_or_instance, Task) else task_or_instance
    env = _ENVS.get(inst.instance_id)
    if env is None or env.instance != inst:
        env = _ENVS[inst.instance_id] = build_environment(inst)
    return env


__all__ = [
    "SYSTEM",
    "EnvironmentError_",
    "Filters",
    "apply_filters",
    "Grade",
    "SweEnvironment",
    "SweEpisode",
    "SweFormatError",
    "SweInstance",
    "TestRun",
    "build_environment",
    "cache_root",
    "environment_for",
    "grade_patch",
    "grade_workspace",
    "instance_task",
    "is_protected",
    "load_instances",
    "populate",
    "read_instances",
    "run_tests",
    "swe_tasks",
    "task_instance",
    "unusable_reason",
    "write_instances",
]
