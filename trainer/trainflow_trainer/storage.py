"""One tiny file API over local folders and S3 (boto3), so checkpoints, data and status use either.

A location is a URI string: `s3://bucket/key/...` or a local path. The S3 endpoint, region and addressing
style come from the job spec's `storage` block; credentials from the environment (AWS_ACCESS_KEY_ID /
AWS_SECRET_ACCESS_KEY), as boto3 reads them.
"""

from __future__ import annotations

import os
import shutil
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .contract.models import StorageEndpoint


def is_s3(uri: str) -> bool:
    return uri.startswith("s3://")


def split_s3(uri: str) -> tuple[str, str]:
    rest = uri[len("s3://") :]
    bucket, _, key = rest.partition("/")
    if not bucket:
        raise ValueError(f"{uri!r}: not an s3://bucket/key URI")
    return bucket, key


def join(base: str, *parts: str) -> str:
    out = base.rstrip("/")
    for p in parts:
        out += "/" + p.strip("/")
    return out


@dataclass
class StorageConfig:
    endpoint: str | None = None
    region: str = "us-east-1"
    force_path_style: bool = True

    @classmethod
    def from_spec(cls, s: StorageEndpoint | None) -> StorageConfig:
        """From the job spec's storage block (its fields are optional: a process without one uses the
        environment's endpoint, MinIO-style addressing)."""
        endpoint = s.endpoint if s is not None else None
        return cls(
            endpoint=endpoint or os.environ.get("TRAINFLOW_S3_ENDPOINT"),
            region=s.region if s is not None and s.region is not None else "us-east-1",
            force_path_style=s.force_path_style if s is not None and s.force_path_style is not None else True,
        )


class Storage:
    # boto3's transfer manager switches to multipart uploads above this size.
    MULTIPART_THRESHOLD = 64 * 1024 * 1024

    def __init__(self, config: StorageConfig | None = None) -> None:
        self.config = config or StorageConfig.from_spec(None)
        self._client: Any = None
        self._lock = threading.Lock()

    @property
    def s3(self) -> Any:  # a boto3 S3 client; boto3 ships no types
        with self._lock:
            if self._client is None:
                import boto3
                from botocore.config import Config

                style = "path" if self.config.force_path_style else "auto"
                self._client = boto3.client(
                    "s3",
                    endpoint_url=self.config.endpoint,
                    region_name=self.config.region,
                    config=Config(s3={"addressing_style": style}, retries={"max_attempts": 5, "mode": "standard"}),
                )
            return self._client

    # -------------------------------------------------------------------------------------- whole objects

    def read_bytes(self, uri: str) -> bytes:
        if is_s3(uri):
            bucket, key = split_s3(uri)
            return self.s3.get_object(Bucket=bucket, Key=key)["Body"].read()
        return Path(uri).read_bytes()

    def write_bytes(self, uri: str, data: bytes) -> None:
        """Atomic for readers: S3 PUT is all-or-nothing; locally we write a temp file and rename."""
        if is_s3(uri):
            bucket, key = split_s3(uri)
            self.s3.put_object(Bucket=bucket, Key=key, Body=data)
            return
        p = Path(uri)
        p.parent.mkdir(parents=True, exist_ok=True)
        tmp = p.with_name(f".{p.name}.tmp-{os.getpid()}")
        tmp.write_bytes(data)
        os.replace(tmp, p)

    def exists(self, uri: str) -> bool:
        if is_s3(uri):
            bucket, key = split_s3(uri)
            try:
                self.s3.head_object(Bucket=bucket, Key=key)
                return True
            except self.s3.exceptions.ClientError as e:
                if e.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                    return False
                raise
        return Path(uri).exists()

    # -------------------------------------------------------------------------------------- files

    def upload_file(self, local: str | Path, uri: str) -> None:
        if is_s3(uri):
            from boto3.s3.transfer import TransferConfig

            bucket, key = split_s3(uri)
            cfg = TransferConfig(
                multipart_threshold=self.MULTIPART_THRESHOLD, multipart_chunksize=self.MULTIPART_THRESHOLD
            )
            self.s3.upload_file(str(local), bucket, key, Config=cfg)
            return
        dst = Path(uri)
        if Path(local).resolve() == dst.resolve():
            return
        dst.parent.mkdir(parents=True, exist_ok=True)
        tmp = dst.with_name(f".{dst.name}.tmp-{os.getpid()}")
        shutil.copyfile(local, tmp)
        os.replace(tmp, dst)

    def download_file(self, uri: str, local: str | Path) -> None:
        Path(local).parent.mkdir(parents=True, exist_ok=True)
        if is_s3(uri):
            bucket, key = split_s3(uri)
            self.s3.download_file(bucket, key, str(local))
            return
        if Path(uri).resolve() != Path(local).resolve():
            shutil.copyfile(uri, local)

    # -------------------------------------------------------------------------------------- listing

    def list_dirs(self, prefix: str) -> list[str]:
        """Names of the immediate 'sub-folders' of prefix."""
        if is_s3(prefix):
            bucket, key = split_s3(prefix)
            key = key.rstrip("/") + "/" if key else ""
            names = []
            for page in self.s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=key, Delimiter="/"):
                for cp in page.get("CommonPrefixes", []):
                    names.append(cp["Prefix"][len(key) :].rstrip("/"))
            return sorted(names)
        p = Path(prefix)
        return sorted(c.name for c in p.iterdir() if c.is_dir()) if p.is_dir() else []

    def list_files(self, prefix: str) -> list[str]:
        """Relative paths of all files under prefix (recursively)."""
        if is_s3(prefix):
            bucket, key = split_s3(prefix)
            key = key.rstrip("/") + "/" if key else ""
            out: list[str] = []
            for page in self.s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=key):
                out.extend(o["Key"][len(key) :] for o in page.get("Contents", []))
            return sorted(out)
        p = Path(prefix)
        return sorted(str(f.relative_to(p)) for f in p.rglob("*") if f.is_file()) if p.is_dir() else []

    def delete_prefix(self, prefix: str) -> None:
        if is_s3(prefix):
            bucket, key = split_s3(prefix)
            key = key.rstrip("/") + "/"
            keys = [{"Key": key + rel} for rel in self.list_files(prefix)]
            for i in range(0, len(keys), 1000):
                self.s3.delete_objects(Bucket=bucket, Delete={"Objects": keys[i : i + 1000], "Quiet": True})
            return
        shutil.rmtree(prefix, ignore_errors=True)
