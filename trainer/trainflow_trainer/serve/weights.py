"""Loading served weights from a committed checkpoint folder (local path or s3:// URI).

A checkpoint folder exists for readers only once its COMMIT.json is there; every file it lists is checked
for size and sha256 before the weights are trusted (the commit protocol of the shared contract).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
from pathlib import Path

from ..model import Transformer, load_pretrained

WEIGHT_FILES = ("config.json", "model.safetensors", "model.safetensors.index.json", "tokenizer.json")


class CheckpointError(Exception):
    pass


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def verify_commit(folder: Path) -> dict:
    commit_path = folder / "COMMIT.json"
    if not commit_path.is_file():
        raise CheckpointError(f"{folder}: no COMMIT.json, so this checkpoint is not committed (still being written?)")
    commit = json.loads(commit_path.read_text())
    for entry in commit.get("files", []):
        p = folder / entry["path"]
        if not p.is_file():
            continue  # only weight files are fetched from S3; the rest are not needed to serve
        if p.stat().st_size != entry["size"] or _sha256(p) != entry["sha256"]:
            raise CheckpointError(f"{p}: size or sha256 differs from COMMIT.json (corrupt or partial upload)")
    return commit


def _download_s3(uri: str, dest: Path) -> None:
    import boto3

    bucket, _, prefix = uri.removeprefix("s3://").partition("/")
    s3 = boto3.client(
        "s3",
        endpoint_url=os.environ.get("TRAINFLOW_S3_ENDPOINT", "http://127.0.0.1:9000"),
        region_name=os.environ.get("AWS_REGION", "us-east-1"),
        aws_access_key_id=os.environ.get("AWS_ACCESS_KEY_ID", "trainflow"),
        aws_secret_access_key=os.environ.get("AWS_SECRET_ACCESS_KEY", "trainflow-secret"),
    )
    prefix = prefix.rstrip("/") + "/"
    names = [n for n in ("COMMIT.json",) + WEIGHT_FILES]
    listed = s3.list_objects_v2(Bucket=bucket, Prefix=prefix).get("Contents", [])
    shards = [o["Key"][len(prefix) :] for o in listed if o["Key"].endswith(".safetensors")]
    for name in dict.fromkeys(names + shards):
        try:
            s3.download_file(bucket, prefix + name, str(dest / name))
        except Exception as e:  # a missing optional file (index, tokenizer) is fine
            if name in ("COMMIT.json", "config.json"):
                raise CheckpointError(f"{uri}{name}: cannot download ({e})") from e


def load_checkpoint(uri: str) -> tuple[Transformer, int | None]:
    """(model, step) from a committed checkpoint folder; step comes from COMMIT.json (None if uncommitted HF dir)."""
    if uri.startswith("s3://"):
        with tempfile.TemporaryDirectory(prefix="trainflow-serve-") as tmp:
            _download_s3(uri, Path(tmp))
            commit = verify_commit(Path(tmp))
            return load_pretrained(tmp), commit.get("step")
    folder = Path(uri)
    if not folder.is_dir():
        raise CheckpointError(f"{uri}: no such checkpoint folder")
    # A trainflow checkpoint folder (step-NNNNNN) must be committed; any other HF folder is served as is.
    ours = re.fullmatch(r"step-\d{6}", folder.name) is not None
    if ours or (folder / "COMMIT.json").is_file() or not (folder / "config.json").is_file():
        commit = verify_commit(folder)
        return load_pretrained(folder), commit.get("step")
    return load_pretrained(folder), None  # a plain HF folder (no commit protocol): served as is
