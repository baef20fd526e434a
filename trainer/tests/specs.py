"""Job specs built the way the pipeline builds them: a pipeline config through the real TypeScript resolver
(`trainflow validate FILE --json --schema-only`: the schema's rules, not the files a test config names), its
resolved stage and model blocks into the job spec the job activity writes (activities/job.ts). No test writes a
stage or model block by hand, so the trainer only ever sees what the schema resolves (its defaults, its units).

Node start-up costs seconds, so a resolved config is cached per snippet: in memory for the session, and on disk
under .data/test-cache/resolved/, keyed by the snippet and the contents of the schema's sources (src/config/):
a changed schema resolves everything again.
"""

from __future__ import annotations

import functools
import hashlib
import json
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from trainflow_trainer.contract import DataSource, StageConfig, TasksConfig, TrainConfig

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
            ["node", str(REPO_DIR / "bin" / "trainflow.js"), "validate", str(path), "--json", "--schema-only"],
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


def _swap_paths(value: Any, table: dict[str, str]) -> Any:
    """`value` with every string found in `table` replaced by its entry."""
    if isinstance(value, dict):
        return {k: _swap_paths(v, table) for k, v in value.items()}
    if isinstance(value, list):
        return [_swap_paths(v, table) for v in value]
    return table.get(value, value) if isinstance(value, str) else value


def _absolute_paths(value: Any) -> list[str]:
    if isinstance(value, dict):
        return [p for v in value.values() for p in _absolute_paths(v)]
    if isinstance(value, list):
        return [p for v in value for p in _absolute_paths(v)]
    return [value] if isinstance(value, str) and value.startswith("/") else []


def resolve(config: dict[str, Any]) -> dict[str, Any]:
    """The resolved pipeline config of `config` (a dict written out as YAML's JSON subset), a fresh copy.
    Absolute paths (a test's temporary folders) go to the resolver as stand-ins and come back as they were:
    the resolver leaves absolute paths alone, and the disk cache then holds across sessions."""
    paths = list(dict.fromkeys(_absolute_paths(config)))
    to_stand_in = {p: f"/stand-in/{i}" for i, p in enumerate(paths)}
    text = json.dumps(_swap_paths(config, to_stand_in), indent=1, sort_keys=True) + "\n"
    resolved = json.loads(_resolve_text(text))
    return _swap_paths(resolved, {v: k for k, v in to_stand_in.items()})


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
    status_uri: str | None = None,  # default: status.json under the output prefix
    input_checkpoint: str | None = None,
    stage_index: int = 0,
    attempt: int = 1,
) -> dict[str, Any]:
    """The job spec of `stage` (a stage block as a config would say it) as the job activity renders it."""
    config = resolve(pipeline([stage], model))
    resolved, resolved_model = config["stages"][0], config["model"]
    return {
        "protocol": 1,
        "pipeline_id": "trainer-test",
        "pipeline_name": config["metadata"]["name"],
        "run_id": "run-1",
        "stage_index": stage_index,
        "attempt": attempt,
        "stage": resolved,
        "model": resolved_model,
        "input_checkpoint": input_checkpoint,
        "output_prefix": output_prefix,
        "resume": True,
        "status_uri": status_uri or f"{output_prefix.rstrip('/')}/status.json",
        "storage": storage or {},
        "tracking": config["tracking"],
        "work_dir": str(work_dir),
    }


# ---- typed blocks for unit tests: the contract's models, from resolved configs -------------------------------

# a preset brings no tokenizer; the schema-only resolver does not open the file
MINIMAL_MODEL: dict[str, Any] = {"init": {"preset": "tiny"}, "tokenizer": {"path": "/unused/tokenizer.json"}}


def lm_stage(**blocks: Any) -> dict[str, Any]:
    """A minimal midtrain stage (as a config says it) with the given blocks."""
    return {"kind": "midtrain", "data": {"sources": [{"path": "/unused.jsonl"}]}, "train": {"steps": 1}, **blocks}


def rollout_stage(kind: str = "rl", **blocks: Any) -> dict[str, Any]:
    """A minimal rl (or rft, or eval) stage with the given blocks (an eval stage trains nothing: no train block)."""
    base: dict[str, Any] = {"kind": kind, "tasks": {"family": "demo"}, "rollout": {}}
    if kind != "eval":
        base["train"] = {"steps": 1}
    if kind == "rl":
        base["algorithm"] = {}
    return {**base, **blocks}


def stage_configs(*stages: dict[str, Any]) -> list[StageConfig]:
    """The resolved, typed stages of one pipeline holding all of `stages` (one resolver run for all)."""
    named = [{**st, "name": f"s{i}"} for i, st in enumerate(stages)]
    config = resolve(pipeline(named, MINIMAL_MODEL))
    return [StageConfig.model_validate(st) for st in config["stages"]]


def train_configs(*trains: dict[str, Any]) -> list[TrainConfig]:
    """Resolved train blocks (micro_batch_size and min_lr filled in as the schema does)."""
    out = [st.train for st in stage_configs(*(lm_stage(train=t) for t in trains))]
    assert all(t is not None for t in out), "midtrain stages resolve a train block"
    return [t for t in out if t is not None]


def data_sources(*sources: dict[str, Any]) -> list[DataSource]:
    """Resolved data sources ({path, weight?, format?} as a config says them)."""
    data = stage_configs(lm_stage(data={"sources": list(sources)}))[0].data
    assert data is not None
    return data.sources


def tasks_config(tasks: dict[str, Any]) -> TasksConfig:
    """A resolved `tasks` block."""
    block = stage_configs(rollout_stage(tasks=tasks))[0].tasks
    assert block is not None
    return block
