"""Job specs built the way the pipeline builds them: a pipeline config through the real TypeScript resolver
(`trainflow validate FILE --json`), its resolved stage and model blocks into the job spec the job activity
writes (activities/job.ts). No test writes a stage or model block by hand, so the trainer only ever sees what
the schema resolves (its defaults, its units).

Node start-up costs seconds, so a resolved config is cached per snippet: in memory for the session, and on disk
under .data/test-cache/resolved/, keyed by the snippet and the contents of the schema's sources (src/config/):
a changed schema resolves everything again.
"""

from __future__ import annotations

import copy
import functools
import hashlib
import json
import subprocess
import tempfile
from pathlib import Path
from typing import Any

TRAINER_DIR = Path(__file__).resolve().parents[1]
REPO_DIR = TRAINER_DIR.parent
CACHE_DIR = REPO_DIR / ".data" / "test-cache" / "resolved"
SCHEMA_SOURCES = REPO_DIR / "src" / "config"


@functools.cache
def _schema_digest() -> str:
    h = hashlib.sha256()
    for f in sorted(SCHEMA_SOURCES.rglob("*.ts")):
        h.update(f.name.encode() + b"\0" + f.read_bytes())
    return h.hexdigest()


@functools.cache
def _resolve_text(config_text: str) -> str:
    key = hashlib.sha256((_schema_digest() + "\0" + config_text).encode()).hexdigest()[:32]
    cached = CACHE_DIR / f"{key}.json"
    if cached.is_file():
        return cached.read_text()
    with tempfile.TemporaryDirectory(prefix="trainflow-config-") as d:
        path = Path(d) / "pipeline.yaml"
        path.write_text(config_text)
        r = subprocess.run(
            ["node", str(REPO_DIR / "bin" / "trainflow.js"), "validate", str(path), "--json"],
            cwd=REPO_DIR,
            capture_output=True,
            text=True,
            timeout=120,
        )
    if r.returncode != 0:
        raise AssertionError(f"trainflow validate rejected the test config:\n{r.stderr}\n{config_text}")
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    tmp = cached.with_suffix(f".{hashlib.sha256(r.stdout.encode()).hexdigest()[:8]}.tmp")
    tmp.write_text(r.stdout)
    tmp.replace(cached)  # atomic: parallel sessions never read half a file
    return r.stdout


def resolve(config: dict[str, Any]) -> dict[str, Any]:
    """The resolved pipeline config of `config` (a dict written out as YAML's JSON subset), a fresh copy."""
    return copy.deepcopy(json.loads(_resolve_text(json.dumps(config, indent=1, sort_keys=True) + "\n")))


def pipeline(stages: list[dict[str, Any]], model: dict[str, Any]) -> dict[str, Any]:
    """A minimal pipeline config around the given stages and model block."""
    return {
        "api_version": "trainflow/v1",
        "metadata": {"name": "trainer-test"},
        "storage": {"uri": "s3://trainflow/tests"},
        "model": model,
        "stages": stages,
    }


def resolved_stage(stage: dict[str, Any], model: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(resolved stage block, resolved model block) of a one-stage pipeline."""
    config = resolve(pipeline([stage], model))
    return config["stages"][0], config["model"]


def job_spec(
    stage: dict[str, Any],
    model: dict[str, Any],
    output_prefix: str,
    work_dir: str | Path,
    *,
    storage: dict[str, Any] | None = None,
    status_uri: str | None = None,
    input_checkpoint: str | None = None,
    stage_index: int = 0,
    attempt: int = 1,
) -> dict[str, Any]:
    """The job spec of `stage` (a stage block as a config would say it) as the job activity renders it."""
    resolved, resolved_model = resolved_stage(stage, model)
    return {
        "protocol": 1,
        "pipeline_id": "trainer-test",
        "run_id": "run-1",
        "stage_index": stage_index,
        "attempt": attempt,
        "stage": resolved,
        "model": resolved_model,
        "input_checkpoint": input_checkpoint,
        "output_prefix": output_prefix,
        "resume": True,
        "status_uri": status_uri,
        "storage": storage or {},
        "work_dir": str(work_dir),
    }
