"""One SWE task instance, in the SWE-bench / SWE-smith format plus what trainflow needs to build it offline.

A line of a SWE instances JSONL file:

    {"instance_id": "sqlparse__0.5.3.a1b2c3d4",           unique
     "repo": "andialbrecht/sqlparse",                     where the code comes from (owner/name or a name)
     "base_commit": "0.5.3",                              the snapshot's revision (a git commit, or a version)
     "patch": "diff --git a/…",                           the gold fix, applied to the base tree
     "test_patch": "",                                    changes to test files applied when grading (SWE-bench)
     "problem_statement": "…",                            what the agent is told
     "FAIL_TO_PASS": ["tests/test_x.py::test_a"],          fail on the base tree, pass with the fix
     "PASS_TO_PASS": ["tests/test_x.py::test_b"],          pass before and after
     "created_at": "2026-12-01T12:00:00Z", "image_name": null,          (SWE-bench fields, kept as they are)
     "snapshot": {"kind": "sdist", "path": "…/sqlparse-0.5.3.tar.gz", "sha256": "…", "setup_patch": "…"},
     "test_cmd": "python -m pytest",
     "environment": {"python": "3", "requirements": ["pytest==8.3.4"], "pythonpath": ["."]},
     "test_files": ["tests/test_x.py"],                  hidden from the agent, restored when grading
     "difficulty": 1, "difficulty_features": {…}}

The base tree is the snapshot's source with `snapshot.setup_patch` applied (a synthesised bug; empty for a
SWE-bench instance, whose base commit is already the buggy revision). Fields that trainflow does not know
(SWE-bench's `version`, `hints_text`, `environment_setup_commit`, …) are kept unchanged, so a dataset from
elsewhere round-trips. SWE-bench's Hugging Face export stores FAIL_TO_PASS / PASS_TO_PASS as JSON strings:
both spellings load.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

# Paths an agent may never change (they decide how tests run or what they see): restored when grading.
PROTECTED_NAMES = frozenset(
    {"conftest.py", "pytest.ini", "tox.ini", "setup.cfg", "pyproject.toml", "sitecustomize.py", "usercustomize.py"}
)
TEST_DIR_NAMES = frozenset({"test", "tests", "testing"})
TEST_FILE_RE = re.compile(r"(^test_.*\.py$)|(.*_test\.py$)")


class SweFormatError(ValueError):
    pass


class Snapshot(BaseModel):
    """Where the repository's source comes from, offline: an sdist archive, a folder, or a local git repository."""

    model_config = ConfigDict(extra="forbid")
    kind: Literal["sdist", "dir", "git"]
    path: str = Field(description="the archive, folder or git repository (absolute, or relative to the JSONL)")
    sha256: str | None = Field(default=None, description="of the sdist archive; checked before it is unpacked")
    subdir: str | None = Field(default=None, description="sdist: the archive's top folder (default: its only one)")
    setup_patch: str = Field(default="", description="a diff applied to the source to make the base tree")


class EnvironmentSpec(BaseModel):
    """The instance's virtualenv: built once from PyPI (pip's cache), then read-only in every episode."""

    model_config = ConfigDict(extra="forbid")
    python: str = Field(default="3", description="major[.minor] of the interpreter; the sandbox's /usr/bin/python3")
    requirements: list[str] = Field(default_factory=list, description="pip requirements, pinned (NAME==VER)")
    pythonpath: list[str] = Field(
        default_factory=lambda: ["."], description="folders of the tree put on PYTHONPATH (src layout: ['src'])"
    )


class SweInstance(BaseModel):
    model_config = ConfigDict(extra="allow", populate_by_name=True)

    instance_id: str = Field(min_length=1)
    repo: str = Field(min_length=1)
    base_commit: str = ""
    patch: str = Field(description="the gold patch (a unified diff)")
    test_patch: str = ""
    problem_statement: str = Field(min_length=1)
    FAIL_TO_PASS: list[str]
    PASS_TO_PASS: list[str] = Field(default_factory=list)
    created_at: str = ""
    image_name: str | None = None
    # trainflow's fields
    snapshot: Snapshot | None = None
    test_cmd: str = "python -m pytest"
    environment: EnvironmentSpec | None = None
    test_files: list[str] | None = None
    difficulty: int | None = Field(default=None, ge=0, le=3, description="0 easy … 3 hard")
    difficulty_features: dict[str, Any] = Field(default_factory=dict)

    @field_validator("FAIL_TO_PASS", "PASS_TO_PASS", mode="before")
    @classmethod
    def _json_list(cls, v: Any) -> Any:
        if isinstance(v, str):  # SWE-bench's HF export: a JSON-encoded list
            try:
                return json.loads(v)
            except json.JSONDecodeError:
                raise ValueError("expected a list of test ids (or a JSON string of one)") from None
        return v

    def hidden_test_files(self) -> list[str]:
        """The test files kept out of the agent's view and restored when grading: `test_files` when given,
        else the files test_patch touches and the files of the FAIL_TO_PASS tests."""
        if self.test_files is not None:
            return sorted(set(self.test_files))
        files = set(patch_files(self.test_patch))
        files.update(t.split("::", 1)[0] for t in self.FAIL_TO_PASS if "::" in t)
        return sorted(files)

    def test_ids(self) -> list[str]:
        return list(dict.fromkeys([*self.FAIL_TO_PASS, *self.PASS_TO_PASS]))

    def to_json(self) -> str:
        return json.dumps(self.model_dump(mode="json", exclude_none=False), ensure_ascii=False)


def is_protected(rel: str, hidden: set[str] | frozenset[str] = frozenset()) -> bool:
    """Whether a path of the tree is the tests' (never taken from the agent's workspace when grading): a hidden
    test file, anything in a tests folder, a test module, conftest.py, pytest/tox/setup config, *.pth and
    site/usercustomize (which Python would import before the tests)."""
    p = Path(rel)
    if rel in hidden or p.name in PROTECTED_NAMES or p.suffix == ".pth":
        return True
    if TEST_FILE_RE.match(p.name):
        return True
    return any(part in TEST_DIR_NAMES for part in p.parts[:-1])


DIFF_FILE_RE = re.compile(r"^diff --git a/(\S+) b/(\S+)$|^\+\+\+ b/(\S+)$", re.M)


def patch_files(patch: str) -> list[str]:
    """The files a unified diff touches (git-style a/ b/ prefixes)."""
    out: list[str] = []
    for m in DIFF_FILE_RE.finditer(patch or ""):
        name = m.group(2) or m.group(3)
        if name and name != "/dev/null" and name not in out:
            out.append(name)
    return out


def read_instances(path: str | Path) -> tuple[list[SweInstance], list[tuple[str, str]]]:
    """The instances of a JSONL file, and (where, reason) for each line that is not a valid instance."""
    good: list[SweInstance] = []
    bad: list[tuple[str, str]] = []
    seen: set[str] = set()
    with open(path) as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            where = f"{path}:{n}"
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                bad.append((where, f"not valid JSON ({e.msg})"))
                continue
            try:
                inst = SweInstance.model_validate(obj)
            except ValidationError as e:
                first = e.errors()[0]
                field = ".".join(str(x) for x in first["loc"]) or "instance"
                iid = obj.get("instance_id") if isinstance(obj, dict) else None
                bad.append((f"{where} ({iid})" if iid else where, f"{field}: {first['msg']}"))
                continue
            if inst.instance_id in seen:
                bad.append((f"{where} ({inst.instance_id})", "duplicate instance_id"))
                continue
            seen.add(inst.instance_id)
            good.append(inst)
    return good, bad


def write_instances(path: str | Path, instances: list[SweInstance]) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(str(path) + ".tmp")
    with open(tmp, "w") as f:
        for inst in instances:
            f.write(inst.to_json() + "\n")
    tmp.replace(path)
