"""Tasks for RFT and RL: the task format, the demo and HumanEval families, and their verifiers."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from .demo import demo_task, demo_tasks
from .humaneval import humaneval_tasks
from .task import Task, TaskFormatError, read_tasks_jsonl, write_tasks_jsonl
from .verify import Verdict, verify, verify_code

if TYPE_CHECKING:
    from ..contract import TasksConfig

DEFAULT_DEMO_COUNT = 200
# the families load_tasks serves (test/config/trainer-facts.test.ts compares them with the schema's)
FAMILIES = ("demo", "humaneval", "jsonl", "swe")


def load_tasks(spec: TasksConfig, base_dir: str | Path | None = None) -> list[Task]:
    """The tasks of a stage's resolved `tasks` block: {family: demo|humaneval|jsonl|swe, path?, count?, seed,
    partial_credit?}. A swe file holds SWE instances (tasks/swe/instance.py), not tasks."""
    if spec.family == "demo":
        assert spec.seed is not None, "tasks.seed: the resolver sets it for family demo (src/config/schema.ts)"
        return demo_tasks(spec.count or DEFAULT_DEMO_COUNT, spec.seed)
    if spec.family == "humaneval":
        return humaneval_tasks(spec.count)
    if not spec.path:  # family jsonl or swe
        raise TaskFormatError(f"tasks.path: the {spec.family} task family needs a path to a JSONL file")
    path = Path(spec.path)
    if base_dir is not None and not path.is_absolute():
        path = Path(base_dir) / path
    if not path.exists():
        raise TaskFormatError(f"tasks.path: no such file {path} (a JSONL file of tasks, see tasks/task.py)")
    if spec.family == "swe":
        from .swe import Filters, swe_tasks

        block = getattr(spec, "filters", None)
        filters = Filters.model_validate(block.model_dump(exclude_none=True)) if block is not None else None
        return swe_tasks(path, spec.count, partial_credit=bool(spec.partial_credit), filters=filters)
    tasks = read_tasks_jsonl(path)
    return tasks[: spec.count] if spec.count is not None else tasks


__all__ = [
    "FAMILIES",
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
