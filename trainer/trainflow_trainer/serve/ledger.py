"""Reading the data plane's trajectory ledger from Python (the trainer's side).

The ledger (written by `src/dataplane/ledger.ts`) is a folder of segments `segment-<first seq>.log`, one
record per line: `<first 16 hex of sha256(json)> <json>` with json = {"seq", "id", "record"}. Sequence
numbers are dense; the trainer's cursor is the seq of the last record it trained on, saved in its checkpoint
(trainer_state.json) so a resumed run reads exactly the records after it: nothing twice, nothing skipped.
A final line that is incomplete or fails its checksum is a write torn by a crash and is not a record yet.

    python -m trainflow_trainer.serve.ledger DIR [AFTER] [LIMIT]   # prints the entries as JSON lines
"""

from __future__ import annotations

import hashlib
import json
import re
import sys
from pathlib import Path
from typing import Any

SEGMENT_RE = re.compile(r"^segment-(\d{12})\.log$")


def parse_segment(data: bytes) -> list[dict[str, Any]]:
    entries = []
    pos = 0
    while True:
        nl = data.find(b"\n", pos)
        if nl < 0:
            break
        line = data[pos:nl].decode("utf-8")
        checksum, sep, payload = line.partition(" ")
        if not sep or len(checksum) != 16 or hashlib.sha256(payload.encode()).hexdigest()[:16] != checksum:
            break  # torn or corrupt tail
        entries.append(json.loads(payload))
        pos = nl + 1
    return entries


def read_ledger(directory: str | Path, after: int = -1, limit: int | None = None) -> list[dict[str, Any]]:
    """Entries with seq > after, in order (at most `limit`)."""
    d = Path(directory)
    if not d.is_dir():
        raise FileNotFoundError(f"{d}: no ledger folder")
    segs = sorted((int(m.group(1)), p) for p in d.iterdir() if (m := SEGMENT_RE.match(p.name)))
    out: list[dict[str, Any]] = []
    for i, (_first, path) in enumerate(segs):
        nxt = segs[i + 1][0] if i + 1 < len(segs) else None
        if nxt is not None and nxt - 1 <= after:
            continue
        for e in parse_segment(path.read_bytes()):
            if e["seq"] > after:
                out.append(e)
                if limit is not None and len(out) >= limit:
                    return out
    return out


if __name__ == "__main__":
    args = sys.argv[1:]
    if not args:
        print(__doc__.strip().splitlines()[-1].strip(), file=sys.stderr)
        sys.exit(2)
    for entry in read_ledger(args[0], int(args[1]) if len(args) > 1 else -1, int(args[2]) if len(args) > 2 else None):
        print(json.dumps(entry))
