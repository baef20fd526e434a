"""The checkpoint commit protocol, on a local folder or S3.

    <prefix>/step-000200/  config.json, model.safetensors (or model-0000i-of-0000n.safetensors + index),
                           tokenizer.json, train_state/ (DCP: .metadata + one __<rank>_0.distcp per rank),
                           trainer_state.json, rng.pt, ... and, written last, COMMIT.json:
    {"format": 1, "step": 200, "final": false, "created_at": ISO, "files": [{"path", "size", "sha256"}, ...]}

Every file counts, in sub-folders too (DCP's hidden `.metadata` included); only COMMIT.json itself and
temporary files of an unfinished copy (`.NAME.tmp-PID`) are left out. Under several ranks each rank uploads the
files it wrote and rank 0 writes COMMIT.json over everyone's entries (upload_files + write_commit).

A folder without COMMIT.json does not exist for readers (a writer died mid-upload). A reader verifies every
listed size and sha256 before trusting a checkpoint; when one fails it says so and falls back to the previous
committed step. Retention keeps the last K non-final checkpoints and every final one.
"""

from __future__ import annotations

import hashlib
import json
import re
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .storage import Storage, is_s3, join, split_s3

COMMIT_FILE = "COMMIT.json"
FORMAT = 1
STEP_DIR_RE = re.compile(r"^step-(\d{6,})$")
TMP_FILE_RE = re.compile(r"^\..+\.tmp(-\d+)?$")  # storage.upload_file's and DCP's files in the making


class CheckpointError(Exception):
    """A checkpoint that must not be trusted (uncommitted, truncated, corrupt)."""


def step_dir(step: int) -> str:
    return f"step-{step:06d}"


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def iso_now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def staged_files(local_dir: str | Path) -> list[Path]:
    """The files of a staged checkpoint folder a commit covers, sorted (see the module doc)."""
    local = Path(local_dir)
    return sorted(
        p for p in local.rglob("*") if p.is_file() and p.name != COMMIT_FILE and not TMP_FILE_RE.match(p.name)
    )


def upload_files(local_dir: str | Path, uri: str, storage: Storage) -> list[dict]:
    """Hashes every staged file of local_dir and uploads it to uri (nothing is copied when local_dir is uri).
    Returns the COMMIT.json entries of these files."""
    local = Path(local_dir)
    entries = []
    for f in staged_files(local):
        rel = f.relative_to(local).as_posix()
        entries.append({"path": rel, "size": f.stat().st_size, "sha256": sha256_file(f)})
        storage.upload_file(f, join(uri, rel))
    return entries


def write_commit(uri: str, step: int, final: bool, entries: list[dict], storage: Storage) -> dict:
    """Writes COMMIT.json over the given file entries (from one rank or gathered from all): the commit point."""
    files = sorted(entries, key=lambda e: e["path"])
    dupes = sorted(p for p, n in Counter(e["path"] for e in files).items() if n > 1)
    if dupes:
        raise CheckpointError(f"{uri}: {dupes[:3]} written by more than one rank (two ranks staged the same file)")
    manifest = {"format": FORMAT, "step": step, "final": final, "created_at": iso_now(), "files": files}
    storage.write_bytes(join(uri, COMMIT_FILE), (json.dumps(manifest, indent=2) + "\n").encode())
    return manifest


def commit(local_dir: str | Path, uri: str, step: int, final: bool, storage: Storage) -> dict:
    """Publishes a staged checkpoint: uploads every file of local_dir to uri, then COMMIT.json last.

    local_dir may be the destination itself (local output): then nothing is copied, only COMMIT.json added.
    """
    return write_commit(uri, step, final, upload_files(local_dir, uri, storage), storage)


def read_commit(uri: str, storage: Storage) -> dict | None:
    path = join(uri, COMMIT_FILE)
    if not storage.exists(path):
        return None
    try:
        manifest = json.loads(storage.read_bytes(path))
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{path}: not valid JSON ({e.msg})") from None
    if manifest.get("format") != FORMAT or not isinstance(manifest.get("files"), list):
        raise CheckpointError(f"{path}: unknown format {manifest.get('format')!r}")
    return manifest


def fetch_verified(
    uri: str, storage: Storage, cache_dir: str | Path, want: Callable[[str], bool] | None = None
) -> tuple[Path, dict]:
    """A committed checkpoint as a local folder whose files all match COMMIT.json.

    Local checkpoints are verified in place; S3 ones are downloaded to cache_dir/<step dir> first. want: which
    listed paths to fetch and verify (default all; a reader of the weights alone leaves the training state).
    Raises CheckpointError naming the first file that fails.
    """
    manifest = read_commit(uri, storage)
    if manifest is None:
        raise CheckpointError(f"{uri}: no {COMMIT_FILE} (never committed: the writer stopped before finishing)")
    local = Path(cache_dir) / Path(uri.rstrip("/")).name if is_s3(uri) else Path(uri)
    for entry in manifest["files"]:
        if want is not None and not want(entry["path"]):
            continue
        src, dst = join(uri, entry["path"]), local / entry["path"]
        if is_s3(uri):
            try:
                storage.download_file(src, dst)
            except Exception as e:  # noqa: BLE001 - a missing object is a corrupt checkpoint, whatever boto says
                raise CheckpointError(f"{src}: listed in {COMMIT_FILE} but cannot be read ({e})") from None
        if not dst.is_file():
            raise CheckpointError(f"{src}: listed in {COMMIT_FILE} but missing")
        size = dst.stat().st_size
        if size != entry["size"]:
            raise CheckpointError(f"{src}: size {size} != {entry['size']} in {COMMIT_FILE} (truncated or overwritten)")
        digest = sha256_file(dst)
        if digest != entry["sha256"]:
            raise CheckpointError(f"{src}: sha256 {digest[:12]}… != {entry['sha256'][:12]}… in {COMMIT_FILE} (corrupt)")
    return local, manifest


def step_dirs(prefix: str, storage: Storage) -> list[int]:
    """Steps of every step-NNNNNN folder under prefix, committed or not, ascending."""
    return sorted(int(m.group(1)) for name in storage.list_dirs(prefix) if (m := STEP_DIR_RE.match(name)))


def committed_steps(prefix: str, storage: Storage) -> list[int]:
    return [s for s in step_dirs(prefix, storage) if storage.exists(join(prefix, step_dir(s), COMMIT_FILE))]


@dataclass
class Found:
    step: int
    uri: str
    local_dir: Path
    manifest: dict


def latest_verified(
    prefix: str,
    storage: Storage,
    cache_dir: str | Path,
    log: Callable[[str], None] = lambda m: print(m, file=sys.stderr, flush=True),
) -> Found | None:
    """The newest checkpoint under prefix that is committed and verifies; refusals are logged."""
    for step in reversed(step_dirs(prefix, storage)):
        uri = join(prefix, step_dir(step))
        try:
            local, manifest = fetch_verified(uri, storage, cache_dir)
        except CheckpointError as e:
            log(f"trainflow: checkpoint refused: {e}; falling back to the previous committed checkpoint")
            continue
        return Found(step, uri, local, manifest)
    return None


def apply_retention(
    prefix: str,
    storage: Storage,
    keep_last: int | None,
    log: Callable[[str], None] = lambda m: print(m, file=sys.stderr, flush=True),
) -> list[int]:
    """Deletes committed non-final checkpoints older than the newest keep_last; finals always stay.
    Returns the deleted steps. keep_last None or <= 0 keeps everything."""
    if not keep_last or keep_last <= 0:
        return []
    non_final = []
    for s in committed_steps(prefix, storage):
        try:
            m = read_commit(join(prefix, step_dir(s)), storage)
        except CheckpointError:
            continue
        if m is not None and not m.get("final"):
            non_final.append(s)
    doomed = non_final[:-keep_last]
    for s in doomed:
        uri = join(prefix, step_dir(s))
        # COMMIT.json goes first, so a half-deleted folder reads as uncommitted, never as a corrupt checkpoint.
        if is_s3(uri):
            bucket, key = split_s3(join(uri, COMMIT_FILE))
            storage.s3.delete_object(Bucket=bucket, Key=key)
        else:
            Path(join(uri, COMMIT_FILE)).unlink(missing_ok=True)
        storage.delete_prefix(uri)
        log(f"trainflow: retention removed {uri} (keep_last={keep_last})")
    return doomed
