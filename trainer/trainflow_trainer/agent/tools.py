"""The tools the reference agent offers the model, executed in the sandbox.

`python {"code": ...}` runs the code in a fresh sandbox and returns what it printed; errors, a timeout or
a kill are reported in the text, as a model should see them. All tool calls of one episode share one work
folder (seeded with the task's environment files), so what one call writes the next can read. A call to an
unknown tool, or with arguments that are not a JSON object with the right fields, gets an error message back
instead of stopping the episode (a model learns from those too).

The SWE tool set (the seed's, KAT-Coder's and SWE-agent's): `bash {"command"}` runs a shell command in the
work folder; `str_replace_editor {"command": view|create|str_replace|insert, "path", ...}` views and edits
files; `submit {}` ends the episode (the verifier then judges the workspace). The editor runs as a program
inside the sandbox too, so a link the model planted never leads a host write out of the folder.
"""

from __future__ import annotations

import json
from typing import Any

from ..sandbox import RunResult, Sandbox, Workspace

MAX_TOOL_OUTPUT = 4000  # characters of a tool response shown to the model
SUBMIT = "submit"


def _tool(name: str, description: str, properties: dict, required: list[str]) -> dict:
    schema = {"type": "object", "properties": properties, "required": required}
    return {"type": "function", "function": {"name": name, "description": description, "parameters": schema}}


BASH_TOOL = _tool(
    "bash",
    "Run a bash command in the repository (the working folder); returns its output and exit code.",
    {"command": {"type": "string", "description": "the command"}},
    ["command"],
)
EDITOR_TOOL = _tool(
    "str_replace_editor",
    "View, create and edit files. view: a file with line numbers (view_range [start, end]) or a folder's "
    "listing; create: write file_text to a new or existing path; str_replace: replace old_str, which must occur "
    "exactly once, with new_str; insert: insert new_str after line insert_line (0: at the top).",
    {
        "command": {"type": "string", "enum": ["view", "create", "str_replace", "insert"]},
        "path": {"type": "string", "description": "a path in the repository"},
        "file_text": {"type": "string"},
        "old_str": {"type": "string"},
        "new_str": {"type": "string"},
        "insert_line": {"type": "integer"},
        "view_range": {"type": "array", "items": {"type": "integer"}},
    },
    ["command", "path"],
)
SUBMIT_TOOL = _tool(SUBMIT, "Submit the work in the repository as it is now; ends the episode.", {}, [])
SWE_TOOLS = [BASH_TOOL, EDITOR_TOOL, SUBMIT_TOOL]

# The editor, run in the sandbox with its arguments on stdin (paths are taken relative to the work folder).
EDITOR_PROGRAM = r"""
import json, os, sys
a = json.load(sys.stdin)
cmd, path = a.get("command"), a.get("path")
def fail(msg):
    print("error: " + msg); sys.exit(1)
if not isinstance(path, str) or not path:
    fail("'path' must name a file")
root = os.path.realpath(os.getcwd())
full = os.path.realpath(os.path.join(root, path.lstrip("/")) if not path.startswith(root) else path)
if full != root and not full.startswith(root + os.sep):
    fail(f"{path} is outside the repository")
rel = os.path.relpath(full, root)
def text(key):
    v = a.get(key)
    if not isinstance(v, str):
        fail(f"{cmd} needs '{key}' (a string)")
    return v
if cmd == "view":
    if os.path.isdir(full):
        for d, dirs, files in os.walk(full):
            dirs[:] = sorted(x for x in dirs if not x.startswith("."))
            depth = os.path.relpath(d, full).count(os.sep) + (d != full)
            if depth > 2:
                dirs[:] = []
                continue
            for f in sorted(files):
                print(os.path.relpath(os.path.join(d, f), root))
        sys.exit(0)
    if not os.path.isfile(full):
        fail(f"{rel} does not exist")
    lines = open(full, errors="replace").read().split("\n")
    lo, hi = 1, len(lines)
    r = a.get("view_range")
    if isinstance(r, list) and len(r) == 2 and all(isinstance(x, int) for x in r):
        lo, hi = max(1, r[0]), (len(lines) if r[1] == -1 else min(len(lines), r[1]))
    for i in range(lo, hi + 1):
        print(f"{i:6d}\t{lines[i - 1]}")
elif cmd == "create":
    os.makedirs(os.path.dirname(full), exist_ok=True)
    with open(full, "w") as f:
        f.write(text("file_text"))
    print(f"wrote {rel}")
elif cmd in ("str_replace", "insert"):
    if not os.path.isfile(full):
        fail(f"{rel} does not exist")
    src = open(full).read()
    if cmd == "str_replace":
        old, new = text("old_str"), a.get("new_str") or ""
        n = src.count(old)
        if n != 1:
            fail(f"old_str occurs {n} times in {rel}; it must occur exactly once")
        src = src.replace(old, new)
    else:
        line = a.get("insert_line")
        lines = src.split("\n")
        if not isinstance(line, int) or not 0 <= line <= len(lines):
            fail(f"insert_line must be a line number in [0, {len(lines)}]")
        lines[line:line] = text("new_str").split("\n")
        src = "\n".join(lines)
    with open(full, "w") as f:
        f.write(src)
    print(f"edited {rel}")
else:
    fail("command must be view, create, str_replace or insert")
"""


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

    def __init__(
        self,
        sandbox: Sandbox,
        files: dict[str, str | bytes] | None = None,
        workspace: Workspace | None = None,
        command_env: dict[str, str] | None = None,
    ):
        """workspace: one the caller made and closes (a swe task's repository copy); command_env: the
        environment of bash commands (a swe task's venv on PATH)."""
        self.sandbox, self.command_env = sandbox, command_env or {}
        self._own = workspace is None
        self.workspace = workspace or sandbox.workspace()
        self.workspace.write(files or {})
        self.submitted = False  # the model called submit: the episode ends after this turn

    def close(self) -> None:
        if self._own:
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
        if name == "bash":
            command = args.get("command")
            if not isinstance(command, str):
                return 'error: the bash tool needs {"command": "..."}'
            env = [f"{k}={v}" for k, v in self.command_env.items()]
            argv = ["/usr/bin/env", *env, "/bin/bash", "-c", command] if env else ["bash", "-c", command]
            return format_run(self.sandbox.run(argv, workspace=self.workspace))
        if name == "str_replace_editor":
            return format_run(self.sandbox.run_python(EDITOR_PROGRAM, stdin=json.dumps(args), workspace=self.workspace))
        if name == SUBMIT:
            self.submitted = True
            return "submitted"
        return f"error: unknown tool {name!r} (available: python, bash, str_replace_editor, submit)"
