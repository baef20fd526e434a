"""Gold trajectories: an instance's gold patch as the reference agent's own episode, for SFT.

The conversation is exactly what the agent (agent/loop.py) would send and receive on the instance: the task's
prompt (the swe system prompt and the problem statement), the SWE tool set offered (agent/tools.py SWE_TOOLS),
then one assistant turn per edit — a `str_replace_editor` call (`str_replace` of a unique stretch of the file,
`create` for a new file), or a `bash` `rm` for a deleted file — each answered by the text the tool returns
("edited PATH", "wrote PATH", ""), and a last turn calling `submit` ("submitted"). So SFT teaches the tokens RL
later samples, in the chat template of the stage's tokenizer (loss on the assistant's turns only).

The edits are derived from file contents, not from the diff's hunks: the base tree (snapshot + setup patch,
environment.build_tree, cached) and the same tree with the gold patch applied (git apply, as grading does),
compared line by line (difflib, 3 lines of context). A stretch whose text occurs more than once in the file as
it is at that turn grows by a line above and below until it is unique and found where it is meant, so the
editor (which refuses an old_str that is not unique) replaces the right place. Calls are one per turn, never
several at once: two parallel edits of one file would race. A patch that changes a binary file, a file's mode
or a link cannot be expressed with these tools: `GoldError` names the instance and why (the caller skips it).

    conv = gold_trajectory(instance)     # {"messages": [...], "tools": SWE_TOOLS}
    tok.render_chat(conv["messages"], tools=conv["tools"])
"""

from __future__ import annotations

import difflib
import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

from ...agent.tools import SUBMIT, SWE_TOOLS
from .environment import EnvironmentError_, apply_patch, build_tree
from .instance import SweInstance, patch_files

CONTEXT_LINES = 3
MAX_FILE_BYTES = 2 * 2**20


class GoldError(ValueError):
    """A gold patch the reference agent's tools cannot replay (the message says which file and why)."""


def file_edits(rel: str, before: str | None, after: str | None) -> list[tuple[str, dict[str, Any], str]]:
    """The tool calls that turn `before` (None: no such file) into `after` (None: deleted), each with the text
    the tool answers: [(tool, arguments, response)]."""
    if after is None:
        return [("bash", {"command": f"rm {_shell_quote(rel)}"}, "")]
    if before is None or before == "":
        return [("str_replace_editor", {"command": "create", "path": rel, "file_text": after}, f"wrote {rel}")]
    a, b = before.splitlines(keepends=True), after.splitlines(keepends=True)
    calls: list[tuple[str, dict[str, Any], str]] = []
    cur = list(a)
    delta = 0  # lines the edits so far added (negative: removed) above the next stretch
    for group in difflib.SequenceMatcher(None, a, b, autojunk=False).get_grouped_opcodes(CONTEXT_LINES):
        i1, i2, j1, j2 = group[0][1], group[-1][2], group[0][3], group[-1][4]
        lo, hi, new = i1 + delta, i2 + delta, b[j1:j2]
        lo, hi = _unique_span(cur, lo, hi)
        old_text = "".join(cur[lo:hi])
        prefix, suffix = cur[lo : i1 + delta], cur[i2 + delta : hi]
        new_text = "".join(prefix + new + suffix)
        if old_text == "" or old_text == new_text:
            continue
        args = {"command": "str_replace", "path": rel, "old_str": old_text, "new_str": new_text}
        calls.append(("str_replace_editor", args, f"edited {rel}"))
        cur[lo:hi] = prefix + new + suffix
        delta += len(new) - (i2 - i1)
    if "".join(cur) != after:  # the editor's own semantics replayed: what the calls make is the fixed file
        raise GoldError(f"{rel}: the str_replace edits do not reproduce the gold file")
    return calls


def _unique_span(lines: list[str], lo: int, hi: int) -> tuple[int, int]:
    """Grow [lo, hi) by a line each side until its text occurs once in the file, first at its own offset (the
    editor counts non-overlapping occurrences and replaces the first)."""
    text = "".join(lines)
    while True:
        old = "".join(lines[lo:hi])
        at = len("".join(lines[:lo]))
        if old and text.count(old) == 1 and text.find(old) == at:
            return lo, hi
        if lo == 0 and hi == len(lines):
            return lo, hi  # the whole file: unique by construction
        lo, hi = max(0, lo - 1), min(len(lines), hi + 1)


def _shell_quote(s: str) -> str:
    return "'" + s.replace("'", "'\\''") + "'"


def _read(path: Path, rel: str) -> str | None:
    if not path.exists() and not path.is_symlink():
        return None
    if path.is_symlink() or not path.is_file():
        raise GoldError(f"{rel}: not a regular file (links and folders cannot be edited with the agent's tools)")
    data = path.read_bytes()
    if len(data) > MAX_FILE_BYTES:
        raise GoldError(f"{rel}: {len(data)} bytes, too large to rewrite in a trajectory")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise GoldError(f"{rel}: a binary file (the editor writes text)") from None


def gold_edits(inst: SweInstance, tree: Path | None = None) -> list[tuple[str, dict[str, Any], str]]:
    """Every tool call (with its response) that makes the instance's gold patch, file by file in the patch's
    order. `tree`: the base tree (default: built or found in the SWE cache)."""
    if not inst.patch.strip():
        raise GoldError("the instance has no gold patch")
    try:
        base = tree or build_tree(inst)
    except EnvironmentError_ as e:
        raise GoldError(f"its base tree cannot be built: {e}") from None
    if any(m in inst.patch for m in ("\nold mode ", "\nnew mode ", "GIT binary patch", "\nrename from ")):
        raise GoldError("the gold patch renames a file or changes a mode or a binary file (not a text edit)")
    files = patch_files(inst.patch)
    with tempfile.TemporaryDirectory(prefix="trainflow-gold-") as tmp:
        fixed = Path(tmp) / "tree"
        for rel in files:  # only the patch's files are needed to apply it
            src = base / rel
            if src.is_file():
                (fixed / rel).parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(src, fixed / rel)
        fixed.mkdir(exist_ok=True)
        try:
            apply_patch(fixed, inst.patch, "apply the gold patch")
        except EnvironmentError_ as e:
            raise GoldError(str(e)) from None
        calls = []
        for rel in files:
            calls.extend(file_edits(rel, _read(base / rel, rel), _read(fixed / rel, rel)))
    if not calls:
        raise GoldError("the gold patch changes nothing")
    return calls


def gold_trajectory(inst: SweInstance, tree: Path | None = None) -> dict[str, Any]:
    """The reference agent's episode that makes the gold patch and submits: {"messages", "tools"}, the messages
    in the agent's own shape (assistant tool_calls with ids, tool messages with tool_call_id and name)."""
    from . import instance_task

    task = instance_task(inst)
    messages: list[dict[str, Any]] = [dict(m) for m in task.prompt]
    steps = [*gold_edits(inst, tree), (SUBMIT, {}, "submitted")]
    for turn, (name, args, response) in enumerate(steps, 1):
        call_id = f"call_{turn}_0"  # what the agent names a call the server gave no id (loop.py)
        call = {"id": call_id, "type": "function", "function": {"name": name, "arguments": args}}
        messages.append({"role": "assistant", "content": "", "tool_calls": [call]})
        messages.append({"role": "tool", "tool_call_id": call_id, "name": name, "content": response})
    return {"messages": messages, "tools": json.loads(json.dumps(SWE_TOOLS)), "instance_id": inst.instance_id}


__all__ = ["GoldError", "file_edits", "gold_edits", "gold_trajectory"]
