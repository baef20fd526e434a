"""The tools the reference agent offers the model, executed in the sandbox.

`python {"code": ...}` runs the code in a fresh sandbox and returns what it printed; errors, a timeout or
a kill are reported in the text, as a model should see them. All tool calls of one episode share one work
folder (seeded with the task's environment files), so what one call writes the next can read. A call to an
unknown tool, or with arguments that are not a JSON object with the right fields, gets an error message back
instead of stopping the episode (a model learns from those too).
"""

from __future__ import annotations

import json
from typing import Any

from ..sandbox import RunResult, Sandbox

MAX_TOOL_OUTPUT = 4000  # characters of a tool response shown to the model


def format_run(r: RunResult) -> str:
    out = r.stdout
    if r.stderr and not r.ok:
        out += ("\n" if out and not out.endswith("\n") else "") + r.stderr
    if r.timed_out:
        out += f"\n[timed out after {r.duration_s:.1f}s]"
    elif r.killed:
        out += f"\n[killed by signal {r.signal}]"
    elif r.exit_code:
        out += f"\n[exit code {r.exit_code}]"
    out = out.strip("\n")
    if len(out) > MAX_TOOL_OUTPUT:
        out = out[:MAX_TOOL_OUTPUT] + "\n[output truncated]"
    return out


def parse_arguments(raw: Any) -> dict:
    if isinstance(raw, dict):
        return raw
    if isinstance(raw, str):
        args = json.loads(raw or "{}")
        if isinstance(args, dict):
            return args
    raise ValueError("tool arguments must be a JSON object")


class ToolBox:
    """The tools of one episode. Close it (or use it as a context manager) to delete its work folder."""

    def __init__(self, sandbox: Sandbox, files: dict[str, str | bytes] | None = None):
        self.sandbox = sandbox
        self.workspace = sandbox.workspace()
        self.workspace.write(files or {})

    def close(self) -> None:
        self.workspace.close()

    def __enter__(self) -> ToolBox:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def call(self, name: str, raw_arguments: Any) -> str:
        try:
            args = parse_arguments(raw_arguments)
        except (ValueError, json.JSONDecodeError) as e:
            return f"error: bad arguments for tool {name!r}: {e}"
        if name == "python":
            code = args.get("code")
            if not isinstance(code, str):
                return 'error: the python tool needs {"code": "..."}'
            try:
                return format_run(self.sandbox.run_python(code, workspace=self.workspace))
            except ValueError as e:  # e.g. main.py replaced by a symlink out of the folder by an earlier call
                return f"error: {e}"
        return f"error: unknown tool {name!r} (available: python)"
