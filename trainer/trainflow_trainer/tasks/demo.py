"""The demo's tasks: small questions about a data file that a tiny model learns to solve on CPU.

Each task asks something about the numbers in the task's `data.txt` (how many, the largest, the sum, the
sum of the even ones, …) in exactly the words of the SFT demo conversations (both come from
`demo_data.demo_question`). SFT teaches the moves: call the `python` tool with a program that reads the file
and prints the result, read the tool response, answer "The answer is <result>." The verifier takes the
answer from what the agent's last program printed (`source: tool`: the model must compute it, and a model
of this size cannot copy numbers reliably from its context) and compares it with the true one (reward 1/0).

Difficulty is the length of the program (more tokens a sampling policy can get wrong), and at level 4 half
the questions need a program the SFT data never showed. Levels 0–4 are drawn in equal shares, so a sampler
sees a spread of pass rates: the easy ones are solved early, the unseen ones rarely.
"""

from __future__ import annotations

import random

from ..demo_data import DEMO_SYSTEM, LEVELS, PYTHON_TOOL, demo_question
from .task import Task

SYSTEM = DEMO_SYSTEM


def demo_task(seed: int, index: int) -> Task:
    """Task `index` of the demo set with this seed: the same (seed, index) always gives the same task."""
    rng = random.Random(f"trainflow-demo-task/{seed}/{index}")
    level = index % LEVELS
    question, files, _code, answer = demo_question(rng, level)
    return Task(
        id=f"demo/{seed}/{index:05d}",
        family="demo",
        prompt=[{"role": "system", "content": SYSTEM}, {"role": "user", "content": question}],
        tools=[PYTHON_TOOL],
        environment={"files": files},
        verifier={"kind": "answer", "expected": answer, "source": "tool"},
        meta={"difficulty": level},
    )


def demo_tasks(count: int = 200, seed: int = 0) -> list[Task]:
    return [demo_task(seed, i) for i in range(count)]
