"""How many records a ledger folder holds, and its S3 generation (src/dataplane/ledger.ts layout:
segment-<first seq>.log files of `<checksum> <json>` lines), read without the writer: a resumed stage checks
its checkpoint's cursor against it."""

from __future__ import annotations

import re
from pathlib import Path

_SEGMENT = re.compile(r"^segment-(\d{12})\.log$")


def ledger_size(folder: Path) -> int:
    if not folder.is_dir():
        return 0
    segs = sorted((int(m.group(1)), p) for p in folder.iterdir() if (m := _SEGMENT.match(p.name)))
    if not segs:
        return 0
    first, last = segs[-1]
    complete = [ln for ln in last.read_bytes().split(b"\n")[:-1] if len(ln) > 17 and ln[16:17] == b" "]
    return first + len(complete)


def ledger_generation(folder: Path) -> str | None:
    """The folder's generation (DIR/generation, written by src/rl/driver.ts when the ledger ships to S3: its
    copy is PREFIX/<generation>/segments/), or None."""
    f = folder / "generation"
    return f.read_text().strip() if f.is_file() else None


def read_ledger(folder: Path) -> list[dict]:
    """Every complete entry {seq, id, record} of a ledger folder, in seq order (a torn last line skipped)."""
    import json

    out: list[dict] = []
    if not folder.is_dir():
        return out
    for _, p in sorted((int(m.group(1)), p) for p in folder.iterdir() if (m := _SEGMENT.match(p.name))):
        for ln in p.read_bytes().split(b"\n")[:-1]:
            try:
                out.append(json.loads(ln[17:]))
            except ValueError:
                break
    return out
