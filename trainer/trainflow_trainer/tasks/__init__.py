"""Tasks for RFT and RL: the task format, the demo and HumanEval families, and their verifiers."""

from __future__ import annotations

from pathlib import Path

from .demo import demo_task, demo_tasks
from .humaneval import humaneval_tasks
from .task import Task, TaskFormatError, read_tasks_jsonl, write_tasks_jsonl
from .verify import Verdict, verify, verify_code

DEFAULT_DEMO_COUNT = 200
FAMILIES = ("demo", "humaneval", "jsonl")


def load_tasks(spec: dict, base_dir: str | Path | None = None) -> list[Task]:
    """The tasks of a stage's `tasks` block: {family: demo|humaneval|jsonl, path?, count?, seed?}."""
    family = spec.get("family")
    count, seed = spec.get("count"), int(spec.get("seed", 0))
    if family == "demo":
        return demo_tasks(count or DEFAULT_DEMO_COUNT, seed)
    if family == "humaneval":
        return humaneval_tasks(count)
    if family == "jsonl":
        if not spec.get("path"):
            raise TaskFormatError("tasks.path: the jsonl task family needs a path to a tasks JSONL file")
        path = Path(spec["path"])
        if base_dir is not None and not path.is_absolute():
            path = Path(base_dir) / path
        if not path.exists():
            raise TaskFormatError(f"tasks.path: no such file {path} (a JSONL file of tasks, see tasks/task.py)")
        tasks = read_tasks_jsonl(path)
        return tasks[:count] if count is not None else tasks
    raise TaskFormatError(f"tasks.family: expected one of {FAMILIES}, got {family!r}")


__all__ = [
    "Task",
    "TaskFormatError",
    "Verdict",
    "demo_task",
    "demo_tasks",
    "humaneval_tasks",
    "load_tasks",
    "read_tasks_jsonl",
    "write_tasks_jsonl",
    "verify",
    "verify_code",
]
