"""Curation filters for imported PR datasets (the seed's: repository stars, PR activity, issue content).

An imported instance (a PR with its issue, e.g. SWE-Gym / SWE-bench-extra / an in-house export) carries
what the filters read as fields of its record, kept as they are by SweInstance:

  stars        repository stars:  `repo_stars`, `stars` or `stargazers_count`
  PR activity  comments + reviews on the PR: `pr_activity`, else `pr_comments` + `pr_review_comments`
  issue        the problem statement's text

A filter that needs a number the record lacks drops the instance (a dataset without stars cannot pass a star
filter); every dropped instance is reported with the filter that dropped it. `tasks.filters` in a stage's
config (family swe) applies them when the tasks load.
"""

from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from .instance import SweInstance

STAR_FIELDS = ("repo_stars", "stars", "stargazers_count")


class Filters(BaseModel):
    model_config = ConfigDict(extra="forbid")
    min_stars: int | None = Field(default=None, ge=0)
    min_pr_activity: int | None = Field(default=None, ge=0)
    issue_min_chars: int | None = Field(default=None, ge=0)
    issue_must_match: str | None = None  # a regular expression the issue text must contain
    issue_must_not_match: str | None = None  # one it must not (e.g. links to screenshots only)


def _extra(inst: SweInstance, name: str) -> Any:
    return (inst.model_extra or {}).get(name)


def stars(inst: SweInstance) -> int | None:
    for f in STAR_FIELDS:
        v = _extra(inst, f)
        if isinstance(v, int):
            return v
    return None


def pr_activity(inst: SweInstance) -> int | None:
    v = _extra(inst, "pr_activity")
    if isinstance(v, int):
        return v
    parts = [_extra(inst, "pr_comments"), _extra(inst, "pr_review_comments")]
    nums = [p for p in parts if isinstance(p, int)]
    return sum(nums) if nums else None


def why_dropped(inst: SweInstance, f: Filters) -> str | None:
    if f.min_stars is not None:
        s = stars(inst)
        if s is None:
            return f"filters.min_stars: the record has no star count ({' / '.join(STAR_FIELDS)})"
        if s < f.min_stars:
            return f"filters.min_stars: {s} stars < {f.min_stars}"
    if f.min_pr_activity is not None:
        a = pr_activity(inst)
        if a is None:
            return "filters.min_pr_activity: the record has no pr_activity (or pr_comments / pr_review_comments)"
        if a < f.min_pr_activity:
            return f"filters.min_pr_activity: {a} < {f.min_pr_activity}"
    text = inst.problem_statement
    if f.issue_min_chars is not None and len(text.strip()) < f.issue_min_chars:
        return f"filters.issue_min_chars: the issue has {len(text.strip())} characters < {f.issue_min_chars}"
    if f.issue_must_match and not re.search(f.issue_must_match, text, re.I | re.M):
        return f"filters.issue_must_match: the issue does not match {f.issue_must_match!r}"
    if f.issue_must_not_match and re.search(f.issue_must_not_match, text, re.I | re.M):
        return f"filters.issue_must_not_match: the issue matches {f.issue_must_not_match!r}"
    return None


def apply_filters(instances: list[SweInstance], f: Filters) -> tuple[list[SweInstance], list[tuple[str, str]]]:
    """(kept, [(instance_id, why dropped)])."""
    kept, dropped = [], []
    for inst in instances:
        why = why_dropped(inst, f)
        if why:
            dropped.append((inst.instance_id, why))
        else:
            kept.append(inst)
    return kept, dropped
