"""The demo's corpora, generated deterministically (no download), and its tokenizer trained from them.

    python -m trainflow_trainer.demo_data OUT_DIR [--seed 0] [--scale 1.0]

writes
    OUT_DIR/midtrain-code.jsonl    {"text": small Python functions with docstrings and tests}
    OUT_DIR/midtrain-tools.jsonl   {"text": plain-text agent transcripts: task, tool call, result}
    OUT_DIR/sft.jsonl              {"messages": [...], "tools": [...]} multi-turn, with tool calls
    OUT_DIR/tokenizer.json (+ tokenizer_config.json: chat template, special ids)
The two mid-train phases mix the first two files with different weights (phase 1 leans on transcripts,
phase 2 on code). The SFT conversations teach the tool-call format the RL stage relies on: the assistant
calls a `python` tool to compute something, reads the tool response, answers.
"""

from __future__ import annotations

import argparse
import json
import random
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from .tokenizer import TOOLS_POSTAMBLE, TOOLS_PREAMBLE, chat_texts_for_training, train_tokenizer

CODE_FILE, TOOLS_FILE, SFT_FILE = "midtrain-code.jsonl", "midtrain-tools.jsonl", "sft.jsonl"

PYTHON_TOOL = {
    "type": "function",
    "function": {
        "name": "python",
        "description": "Run a Python snippet in a sandbox and return what it prints.",
        "parameters": {
            "type": "object",
            "properties": {"code": {"type": "string", "description": "Python source to run"}},
            "required": ["code"],
        },
    },
}

NOUNS = ["items", "values", "numbers", "scores", "prices", "counts", "sizes", "weights", "lengths", "ages"]
VERBS = ["total", "largest", "smallest", "average", "sorted", "unique", "evens", "odds", "squares", "doubled"]


def _func_doc(rng: random.Random) -> str:
    """A small Python function with a docstring and a doctest-like check."""
    noun, verb = rng.choice(NOUNS), rng.choice(VERBS)
    name = f"{verb}_{noun}"
    xs = [rng.randint(0, 50) for _ in range(rng.randint(3, 7))]
    bodies = {
        "total": ("Return the sum of the {n}.", "return sum({n})", sum(xs)),
        "largest": ("Return the largest of the {n}.", "return max({n})", max(xs)),
        "smallest": ("Return the smallest of the {n}.", "return min({n})", min(xs)),
        "average": ("Return the mean of the {n}.", "return sum({n}) / len({n})", sum(xs) / len(xs)),
        "sorted": ("Return the {n} in increasing order.", "return sorted({n})", sorted(xs)),
        "unique": (
            "Return the distinct {n}, in order of first appearance.",
            "seen = []\n    for x in {n}:\n        if x not in seen:\n            seen.append(x)\n    return seen",
            list(dict.fromkeys(xs)),
        ),
        "evens": ("Return the even {n}.", "return [x for x in {n} if x % 2 == 0]", [x for x in xs if x % 2 == 0]),
        "odds": ("Return the odd {n}.", "return [x for x in {n} if x % 2 == 1]", [x for x in xs if x % 2 == 1]),
        "squares": ("Return the square of each of the {n}.", "return [x * x for x in {n}]", [x * x for x in xs]),
        "doubled": ("Return each of the {n} times two.", "return [2 * x for x in {n}]", [2 * x for x in xs]),
    }
    doc, body, result = bodies[verb]
    doc, body = doc.format(n=noun), body.format(n=noun)
    return f'def {name}({noun}):\n    """{doc}"""\n    {body}\n\n\nassert {name}({xs!r}) == {result!r}\n'


LEVELS = 5
DEMO_SYSTEM = "You are a coding agent. Use the python tool to compute."
DATA_FILE = "data.txt"
_NUMS = f"map(int, open('{DATA_FILE}').read().split())"
# Per level, the questions of that level: (question, the program that answers it, the answer's function).
# The levels are programs of growing length, and a longer program has more tokens a sampling policy can get
# wrong; level 4's first question needs a program the SFT data never shows (only RL can find it).
QUESTIONS: list[list[tuple[str, str, Callable[[list[int]], object]]]] = [
    [("How many numbers are in data.txt?", f"print(len(open('{DATA_FILE}').read().split()))", len)],
    [
        ("What is the largest number in data.txt?", f"print(max({_NUMS}))", max),
        ("What is the smallest number in data.txt?", f"print(min({_NUMS}))", min),
    ],
    [("What is the sum of the numbers in data.txt?", f"print(sum({_NUMS}))", sum)],
    [
        (
            "What is the sum of the even numbers in data.txt?",
            f"print(sum(x for x in {_NUMS} if x % 2 == 0))",
            lambda xs: sum(x for x in xs if x % 2 == 0),
        ),
        (
            "How many odd numbers are in data.txt?",
            f"print(sum(1 for x in {_NUMS} if x % 2 == 1))",
            lambda xs: sum(1 for x in xs if x % 2 == 1),
        ),
    ],
    [
        (
            "What is the sum of the two largest numbers in data.txt?",
            f"print(sum(sorted({_NUMS})[-2:]))",
            lambda xs: sum(sorted(xs)[-2:]),
        ),
        (
            "What is the product of the numbers in data.txt?",
            f"import math\nprint(math.prod({_NUMS}))",
            lambda xs: __import__("math").prod(xs),
        ),
    ],
]
UNSEEN = QUESTIONS[4][0][0]


def demo_question(rng: random.Random, level: int, unseen: bool = True) -> tuple[str, dict[str, str], str, str]:
    """(question, files, python code that prints the answer, the answer) at difficulty `level` 0 … 4.

    The one generator behind the demo's SFT conversations, mid-training transcripts and RL tasks, so the
    phrasing the model learns is the phrasing it is tested on. The numbers live in the task's `data.txt`
    (the agent reads them with code, as a real agent reads a repository): the model has to pick and write
    the right program for the question. `unseen=False` (the SFT data) leaves out level 4's first question."""
    xs = [rng.randint(1, 99) for _ in range(rng.randint(3, 8))]
    choices = [c for c in QUESTIONS[level] if unseen or c[0] != UNSEEN]
    question, code, fn = rng.choice(choices)
    return question, {DATA_FILE: " ".join(map(str, xs)) + "\n"}, code, str(fn(xs))


def _arith_task(rng: random.Random) -> tuple[str, str, str]:
    """(question, python code, printed result) of a demo question of a random level, without the hard one."""
    question, _files, code, answer = demo_question(rng, rng.randrange(LEVELS), unseen=False)
    return question, code, answer


def _answer(question: str, result: str) -> str:
    return f"The answer is {result}."


def _conversation(rng: random.Random) -> dict:
    """A demo task solved: the question, a python call that reads data.txt, its output, the answer; mostly
    with the demo's system prompt, sometimes closed by a small-talk turn."""
    messages: list[dict] = []
    if rng.random() < 0.9:
        messages.append({"role": "system", "content": DEMO_SYSTEM})
    q, code, out = _arith_task(rng)
    messages.append({"role": "user", "content": q})
    messages.append(
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [{"type": "function", "function": {"name": "python", "arguments": {"code": code}}}],
        }
    )
    messages.append({"role": "tool", "content": out})
    messages.append({"role": "assistant", "content": _answer(q, out)})
    if rng.random() < 0.2:
        messages.append({"role": "user", "content": "Thanks!"})
        messages.append({"role": "assistant", "content": "You are welcome."})
    return {"messages": messages, "tools": [PYTHON_TOOL]}


def _transcript_doc(rng: random.Random) -> str:
    """A tool-use transcript as plain text (mid-training sees agent behaviour before SFT's chat format)."""
    q, code, out = _arith_task(rng)
    return f"Task: {q}\nAction: python\n```python\n{code}\n```\nObservation: {out}\nAnswer: {out}\n"


def write_jsonl(path: Path, rows: Iterable[Any]) -> int:
    path.parent.mkdir(parents=True, exist_ok=True)
    n = 0
    with path.open("w") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
            n += 1
    return n


def generate(out_dir: str | Path, seed: int = 0, scale: float = 1.0, vocab_size: int = 2048) -> dict[str, int]:
    out = Path(out_dir)
    rng = random.Random(seed)
    n_code, n_tr, n_sft = int(2000 * scale), int(2000 * scale), int(1500 * scale)
    code = [{"text": _func_doc(rng)} for _ in range(n_code)]
    transcripts = [{"text": _transcript_doc(rng)} for _ in range(n_tr)]
    convs = [_conversation(rng) for _ in range(n_sft)]
    counts = {
        CODE_FILE: write_jsonl(out / CODE_FILE, code),
        TOOLS_FILE: write_jsonl(out / TOOLS_FILE, transcripts),
        SFT_FILE: write_jsonl(out / SFT_FILE, convs),
    }
    texts = [r["text"] for r in code] + [r["text"] for r in transcripts] + list(chat_texts_for_training(convs))
    # The tool preamble of the chat template appears in every SFT conversation: let BPE learn it too.
    tools_system = TOOLS_PREAMBLE + "\n" + json.dumps(PYTHON_TOOL, ensure_ascii=False) + TOOLS_POSTAMBLE
    tok = train_tokenizer(texts + [tools_system] * 50, vocab_size=vocab_size)
    tok.save(out)
    counts["tokenizer.json vocab_size"] = tok.vocab_size
    return counts


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("out_dir")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--scale", type=float, default=1.0, help="multiplies the number of documents/conversations")
    ap.add_argument("--vocab-size", type=int, default=2048)
    ap.add_argument("--quiet", action="store_true", help="print nothing")
    args = ap.parse_args()
    counts = generate(args.out_dir, args.seed, args.scale, args.vocab_size)
    for k, v in [] if args.quiet else counts.items():
        print(f"{k}: {v}")


if __name__ == "__main__":
    main()


__all__ = ["generate", "PYTHON_TOOL", "DEMO_SYSTEM", "LEVELS", "demo_question"]
