"""The task format shared by RFT and RL: what the agent is asked, what its sandbox holds, how it is scored.

A task is one JSON object (a line of a tasks JSONL file):

    {"id": "demo/0/00017",                       unique; the sampler's statistics are keyed by it
     "family": "demo",                           demo | humaneval | jsonl | swe (where it came from)
     "prompt": [{"role": "user", "content": "What is 12 + 30?"}],   the opening messages (system, user)
     "tools": [{"type": "function", "function": {"name": "python", ...}}],   tools offered to the model
     "environment": {"files": {"data.txt": "..."}},                  set-up of the sandbox the tools run in
     "verifier": {"kind": "answer", "expected": "42"},               see verify.py for the kinds
     "meta": {"difficulty": 0}}                                      free information (never shown to the model)
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

VERIFIER_KINDS = ("answer", "unit_tests", "swe_tests")


class TaskFormatError(ValueError):
    pass


@dataclass(frozen=True)
class Task:
    id: str
    family: str
    prompt: list[dict]
    verifier: dict
    tools: list[dict] = field(default_factory=list)
    environment: dict = field(default_factory=dict)
    meta: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), ensure_ascii=False, sort_keys=True)

    @classmethod
    def from_dict(cls, d: Any, where: str = "task") -> Task:
        if not isinstance(d, dict):
            raise TaskFormatError(f"{where}: expected a JSON object, got {type(d).__name__}")
        for key in ("id", "prompt", "verifier"):
            if key not in d:
                raise TaskFormatError(f"{where}: missing field '{key}' (a task needs id, prompt and verifier)")
        unknown = set(d) - {"id", "family", "prompt", "verifier", "tools", "environment", "meta"}
        if unknown:
            raise TaskFormatError(
                f"{where}: unknown field(s) {sorted(unknown)} "
                "(known: id, family, prompt, verifier, tools, environment, meta)"
            )
        if not isinstance(d["id"], str) or not d["id"]:
            raise TaskFormatError(f"{where}: field 'id' must be a non-empty string")
        prompt = d["prompt"]
        if isinstance(prompt, str):
            prompt = [{"role": "user", "content": prompt}]
        if (
            not isinstance(prompt, list)
            or not prompt
            or not all(
                isinstance(m, dict) and m.get("role") in ("system", "user") and isinstance(m.get("content"), str)
                for m in prompt
            )
        ):
            raise TaskFormatError(
                f"{where} ({d['id']}): field 'prompt' must be a string or a non-empty list of "
                "{role: system|user, content: string} messages"
            )
        v = d["verifier"]
        if not isinstance(v, dict) or v.get("kind") not in VERIFIER_KINDS:
            raise TaskFormatError(f"{where} ({d['id']}): field 'verifier.kind' must be one of {VERIFIER_KINDS}")
        if v["kind"] == "answer" and not isinstance(v.get("expected"), str):
            raise TaskFormatError(f"{where} ({d['id']}): an answer verifier needs 'expected' (a string)")
        if v["kind"] == "answer" and v.get("source", "final") not in ("final", "tool"):
            raise TaskFormatError(
                f"{where} ({d['id']}): field 'verifier.source' must be final or tool, got {v.get('source')!r}"
            )
        if v["kind"] == "swe_tests" and not isinstance((d.get("environment") or {}).get("swe"), dict):
            raise TaskFormatError(f"{where} ({d['id']}): a swe_tests verifier needs environment.swe (the instance)")
        if v["kind"] == "unit_tests" and not isinstance(v.get("test"), str):
            raise TaskFormatError(f"{where} ({d['id']}): a unit_tests verifier needs 'test' (Python source)")
        return cls(
            id=d["id"],
            family=d.get("family", "jsonl"),
            prompt=prompt,
            verifier=v,
            tools=list(d.get("tools") or []),
            environment=dict(d.get("environment") or {}),
            meta=dict(d.get("meta") or {}),
        )


def read_tasks_jsonl(path: str | Path) -> list[Task]:
    tasks, seen = [], set()
    with open(path) as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise TaskFormatError(f"{path}:{n}: not valid JSON ({e.msg})") from None
            task = Task.from_dict(obj, where=f"{path}:{n}")
            if task.id in seen:
                raise TaskFormatError(f"{path}:{n}: duplicate task id {task.id!r}")
            seen.add(task.id)
            tasks.append(task)
    return tasks


def write_tasks_jsonl(path: str | Path, tasks: list[Task]) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        for t in tasks:
            f.write(t.to_json() + "\n")
