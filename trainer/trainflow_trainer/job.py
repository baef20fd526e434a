"""The job entry point the pipeline's job activity launches:

    python -m trainflow_trainer.job --spec SPEC.json        (or under trainflow_trainer.torchrun for several ranks)

Reads the job spec and validates it against the contract (trainflow_trainer/contract/, generated from the
zod schemas: the stage and model blocks arrive resolved, every default filled in), runs the stage's entry
(stages/), writes the status object, and exits
    0  done
    2  bad input (spec, config, data, shapes, unknown preset): one line `trainflow: bad input: ...` on stderr
    75 preempted: SIGTERM arrived; a checkpoint was saved first when one could be made
    other  infrastructure failure (the activity retries)
Under torchrun, a rank that exits 2 or 75 also records it for the wrapper (torchrun.py), as torchrun exits 1.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
import traceback
from pathlib import Path

from pydantic import ValidationError

from .contract import BAD_INPUT_PREFIX, EXIT_BAD_INPUT, EXIT_DONE, EXIT_PREEMPTED, JobSpec
from .errors import BadInput, Preempted
from .torchrun import record_exit

EXIT_FAILURE = 1  # any other code retries; 0, 2 and 75 are the contract's


def load_spec(path: str) -> JobSpec:
    """The job spec, validated against the contract (src/contract/job.ts): one line naming the first bad field."""
    p = Path(path)
    if not p.is_file():
        raise BadInput(f"job spec {path}: no such file")
    try:
        return JobSpec.model_validate_json(p.read_bytes())
    except ValidationError as e:
        first = e.errors()[0]
        if first["type"] == "json_invalid":
            raise BadInput(f"job spec {path}: invalid JSON ({first['msg']})") from None
        where = "".join(f"[{k}]" if isinstance(k, int) else f".{k}" for k in first["loc"]).lstrip(".") or "(root)"
        more = f" (and {e.error_count() - 1} more)" if e.error_count() > 1 else ""
        raise BadInput(f"job spec {path}: {where}: {first['msg']}{more}") from None


class JobContext:
    """What a stage entry gets: the spec, storage, processes, status reporter and the stop request."""

    def __init__(self, spec: JobSpec) -> None:
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
    reason = " ".join(str(msg).split())
    # recorded first: under torchrun another rank's failure may SIGTERM this one at any moment, and the record is
    # what the wrapper turns into the job's exit 2 (torchrun itself exits 1)
    record_exit(EXIT_BAD_INPUT, reason)
    print(f"{BAD_INPUT_PREFIX}{reason}", file=sys.stderr, flush=True)
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
        run = get_stage(spec.stage.kind)
    except KeyError as e:
        return bad_input(str(e.args[0]))

    ctx = JobContext(spec)
    previous_handler = signal.signal(signal.SIGTERM, lambda signum, frame: ctx.stop_requested.set())
    ctx.status.start()
    code = EXIT_FAILURE
    try:
        from .stages.curate import resolve_curated_tasks

        resolve_curated_tasks(ctx)  # tasks: {from: CURATE_STAGE}: its committed instances, fetched verified
        run(ctx)
        ctx.status.update(state="done")
        code = EXIT_DONE
    except BadInput as e:  # includes ConfigError and DataError
        ctx.status.update(state="failed", reason=f"bad input: {e}")
        code = bad_input(str(e))
    except Preempted:
        ctx.status.update(state="failed", reason="preempted")
        ctx.log("trainflow: preempted (SIGTERM): exiting 75")
        code = EXIT_PREEMPTED
        record_exit(code, "preempted")
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
