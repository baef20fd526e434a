"""The demo's tasks: small questions a tiny model learns to answer in a few minutes of RL on CPU.

Each task asks for something to compute — arithmetic, a list sum, a reversed string, a sorted list — in
exactly the words of the SFT demo conversations (`demo_data._arith_task`), so the SFT stage has already
taught the moves: call the `python` tool with code that prints the result, read the tool response, answer
"The answer is <result>." The verifier compares that answer with the true one (reward 1 or 0).

Difficulty is the length of what must be copied correctly (digits, list items, letters) and, at the
hardest level, a two-operation expression the SFT data never showed. Levels 0–4 are drawn in equal shares,
so a sampler sees a spread of pass rates: the easy ones are solved early, the hard ones rarely.
"""

from __future__ import annotations

import random

from ..demo_data import PYTHON_TOOL
from .task import Task

SYSTEM = "You are a coding agent. Use the python tool to compute."
LEVELS = 5


def _question(rng: random.Random, level: int) -> tuple[str, str]:
    """(question, exact answer) at a difficulty level 0 (easy) … 4 (hard)."""
    kind = rng.randrange(4)
    if level == 4 and rng.random() < 0.5:
        a, b, c = rng.randint(10, 99), rng.randint(10, 99), rng.randint(100, 999)
        op1, op2 = rng.choice(["+", "*"]), rng.choice(["+", "-"])
        expr = f"{a} {op1} {b} {op2} {c}"
        return f"What is {expr}?", str(eval(expr))
    if kind == 0:
        hi = [9, 99, 999, 9999, 99999][level]
        a, b = rng.randint(1, hi), rng.randint(1, hi)
        op = rng.choice(["+", "-", "*"] if level >= 2 else ["+", "-"])
        return f"What is {a} {op} {b}?", str(eval(f"{a} {op} {b}"))
    if kind == 1:
        xs = [rng.randint(1, 99) for _ in range(2 + level)]
        return f"What is the sum of {xs}?", str(sum(xs))
    if kind == 2:
        word = "".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(3 + 2 * level))
        return f"Reverse the string {word!r}.", word[::-1]
    xs = [rng.randint(1, 99) for _ in range(2 + level)]
    return f"Sort {xs} in increasing order.", str(sorted(xs))


def demo_task(seed: int, index: int) -> Task:
    """Task `index` of the demo set with this seed: the same (seed, index) always gives the same task."""
    rng = random.Random(f"trainflow-demo-task/{seed}/{index}")
    level = index % LEVELS
    question, answer = _question(rng, level)
    return Task(
        id=f"demo/{seed}/{index:05d}",
        family="demo",
        prompt=[{"role": "system", "content": SYSTEM}, {"role": "user", "content": question}],
        tools=[PYTHON_TOOL],
        environment={},
        verifier={"kind": "answer", "expected": answer},
        meta={"difficulty": level},
    )


def demo_tasks(count: int = 200, seed: int = 0) -> list[Task]:
    return [demo_task(seed, i) for i in range(count)]
