"""The job entry point the pipeline's job activity launches:

    python -m trainflow_trainer.job --spec SPEC.json        (or under torchrun for several GPUs)

Reads and validates the job spec, runs the stage's entry (stages/), writes the status object, and exits
    0  done
    2  bad input (spec, config, data, shapes, unknown preset): one line `trainflow: bad input: ...` on stderr
    75 preempted: SIGTERM arrived; a checkpoint was saved first when one could be made
    other  infrastructure failure (the activity retries)
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import BadInput, Preempted

EXIT_OK, EXIT_BAD_INPUT, EXIT_PREEMPTED, EXIT_FAILURE = 0, 2, 75, 1


@dataclass
class JobSpec:
    stage: dict
    model: dict
    output_prefix: str
    work_dir: str
    input_checkpoint: str | None = None
    resume: bool = True
    status_uri: str | None = None
    storage: dict = field(default_factory=dict)
    pipeline_id: str = ""
    run_id: str = ""
    stage_index: int = 0
    attempt: int = 1
    protocol: int = 1

    @classmethod
    def from_dict(cls, d: Any, where: str) -> JobSpec:
        if not isinstance(d, dict):
            raise BadInput(f"{where}: the job spec must be a JSON object")
        if d.get("protocol", 1) != 1:
            raise BadInput(f"{where}: protocol {d.get('protocol')!r} is not supported (this trainer speaks protocol 1)")

        def need(key: str, kind: type | tuple, what: str):
            v = d.get(key)
            if not isinstance(v, kind) or (isinstance(v, str) and not v):
                raise BadInput(f"{where}: field `{key}` must be {what}, got {v!r}")
            return v

        stage = need("stage", dict, "an object (the resolved stage config)")
        if not isinstance(stage.get("kind"), str):
            raise BadInput(f"{where}: field `stage.kind` must be a string (midtrain, sft, ...)")
        model = d.get("model") or {}
        if not isinstance(model, dict):
            raise BadInput(f"{where}: field `model` must be an object")
        ic = d.get("input_checkpoint")
        if ic is not None and (not isinstance(ic, str) or not ic):
            raise BadInput(f"{where}: field `input_checkpoint` must be a URI/path or null, got {ic!r}")
        storage = d.get("storage") or {}
        if not isinstance(storage, dict):
            raise BadInput(f"{where}: field `storage` must be an object")
        return cls(
            stage=stage,
            model=model,
            output_prefix=need("output_prefix", str, "an s3:// URI or a local folder"),
            work_dir=need("work_dir", str, "an absolute scratch folder path"),
            input_checkpoint=ic,
            resume=bool(d.get("resume", True)),
            status_uri=d.get("status_uri") or None,
            storage=storage,
            pipeline_id=str(d.get("pipeline_id", "")),
            run_id=str(d.get("run_id", "")),
            stage_index=int(d.get("stage_index", 0)),
            attempt=int(d.get("attempt", 1)),
            protocol=1,
        )


def load_spec(path: str) -> JobSpec:
    p = Path(path)
    if not p.is_file():
        raise BadInput(f"job spec {path}: no such file")
    try:
        d = json.loads(p.read_text())
    except json.JSONDecodeError as e:
        raise BadInput(f"job spec {path}: invalid JSON at line {e.lineno} ({e.msg})") from None
    return JobSpec.from_dict(d, f"job spec {path}")


class JobContext:
    """What a stage entry gets: the spec, storage, processes, status reporter and the stop request."""

    def __init__(self, spec: JobSpec):
        from .status import StatusReporter
        from .storage import Storage, StorageConfig
        from .train import init_distributed

        self.spec = spec
        self.storage = Storage(StorageConfig.from_spec(spec.storage))
        self.dist = init_distributed()
        self.status = StatusReporter(self.storage, spec.status_uri, spec.attempt, enabled=self.dist.is_main)
        self.stop_requested = threading.Event()
        Path(spec.work_dir).mkdir(parents=True, exist_ok=True)

    def should_stop(self) -> bool:
        """True once SIGTERM arrived on any rank (all ranks agree, so they stop at the same step)."""
        flag = self.stop_requested.is_set()
        if self.dist.distributed:
            import torch
            import torch.distributed as dist

            t = torch.tensor([1 if flag else 0], device=self.dist.device if self.dist.fsdp else "cpu")
            dist.all_reduce(t, op=dist.ReduceOp.MAX)
            flag = bool(t.item())
        return flag

    def log(self, msg: str) -> None:
        if self.dist.is_main:
            print(msg, file=sys.stderr, flush=True)


def bad_input(msg: str) -> int:
    print(f"trainflow: bad input: {' '.join(str(msg).split())}", file=sys.stderr, flush=True)
    return EXIT_BAD_INPUT


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m trainflow_trainer.job", description="Run one trainflow stage job.")
    ap.add_argument("--spec", required=True, help="the job spec JSON file")
    args = ap.parse_args(argv)
    try:
        spec = load_spec(args.spec)
    except BadInput as e:
        return bad_input(str(e))

    from .checkpoint import CheckpointError
    from .stages import get_stage

    try:
        run = get_stage(spec.stage["kind"])
    except KeyError as e:
        return bad_input(str(e.args[0]))

    ctx = JobContext(spec)
    previous_handler = signal.signal(signal.SIGTERM, lambda signum, frame: ctx.stop_requested.set())
    ctx.status.start()
    code = EXIT_FAILURE
    try:
        run(ctx)
        ctx.status.update(state="done")
        code = EXIT_OK
    except BadInput as e:  # includes ConfigError and DataError
        ctx.status.update(state="failed", reason=f"bad input: {e}")
        code = bad_input(str(e))
    except Preempted:
        ctx.status.update(state="failed", reason="preempted")
        ctx.log("trainflow: preempted (SIGTERM): exiting 75")
        code = EXIT_PREEMPTED
    except CheckpointError as e:
        ctx.status.update(state="failed", reason=f"checkpoint: {e}")
        ctx.log(f"trainflow: checkpoint error: {e}")
        code = EXIT_FAILURE
    except Exception as e:  # noqa: BLE001 - anything else is an infrastructure failure: retried
        traceback.print_exc()
        ctx.status.update(state="failed", reason=f"{type(e).__name__}: {e}")
        code = EXIT_FAILURE
    finally:
        signal.signal(signal.SIGTERM, previous_handler)
        ctx.status.stop()
        ctx.status.write()
        if ctx.dist.distributed:
            import torch.distributed as dist

            if dist.is_initialized():
                dist.destroy_process_group()
    return code


if __name__ == "__main__":
    # Run the package's module, not this __main__ copy, so stages raise the same exception classes we catch.
    from trainflow_trainer.job import main as package_main

    sys.exit(package_main())
