"""The rollout side of a stage as child processes: the CPU inference server and the data-plane driver
(src/rl/driver.ts: proxy + ledger + sampler + rollout manager + agent workers).

    with Rollouts.start(ctx, stage, policy_dir, version, cursor, stats_file, mode="rl") as ro:
        msg = ro.next_message()            # {"type": "batch", groups, cursor, sampler_stats, metrics, ...}
        ro.trained(weights_dir, version)   # the manager pauses the server, reloads, resumes

Both children die with the job (processes.Child); leaving the `with` stops them.
"""

from __future__ import annotations

import os
import secrets
import shutil
import sys
from pathlib import Path

from pydantic import ValidationError

from ..contract import (
    RL_LINE_PREFIX,
    SERVE_LINE_PREFIX,
    DriverBatch,
    DriverCollected,
    DriverDone,
    DriverMessage,
    DriverReady,
    DriverSpec,
    ServeReady,
    Trained,
)
from ..errors import BadInput
from ..sandbox import Limits
from ..sandbox.limits import duration_s
from ..tasks import TaskFormatError, load_tasks, write_tasks_jsonl
from .processes import Child

TRAINER_DIR = Path(__file__).resolve().parents[2]
REPO_DIR = TRAINER_DIR.parent
CLI = REPO_DIR / "bin" / "trainflow.js"  # `trainflow rl-driver SPEC` runs src/rl/driver.ts


def driver_message(raw: dict) -> DriverReady | DriverBatch | DriverCollected | DriverDone:
    """A `TRAINFLOW_RL` line of the driver as the contract's model (src/contract/driver.ts)."""
    try:
        return DriverMessage.model_validate(raw).root
    except ValidationError as e:
        raise RuntimeError(f"data plane: a message outside the driver protocol: {e}") from None


def rollout_config(stage: dict) -> dict:
    r = {
        "group_size": 8,
        "concurrency": 8,
        "batch_groups": 4,
        "max_turns": 4,
        "max_new_tokens": 256,
        "temperature": 1.0,
        "max_staleness": 1,
        **(stage.get("rollout") or {}),
    }
    if "top_p" not in r:
        raise BadInput("stage.rollout.top_p is missing: a job spec carries the resolved config (`trainflow validate`)")
    if not isinstance(r["top_p"], (int, float)) or not 0 < r["top_p"] <= 1:
        raise BadInput(f"stage.rollout.top_p: expected a number in (0, 1], got {r['top_p']!r}")
    for k in ("group_size", "concurrency", "batch_groups", "max_turns", "max_new_tokens"):
        if not isinstance(r[k], int) or isinstance(r[k], bool) or r[k] < 1:
            raise BadInput(f"stage.rollout.{k}: expected a positive integer, got {r[k]!r}")
    if r["concurrency"] < r["group_size"]:
        raise BadInput(
            f"stage.rollout.concurrency {r['concurrency']} must be >= group_size {r['group_size']} "
            "(a group's sessions run at once)"
        )
    if r.get("session_idle_timeout") is not None:  # milliseconds in the resolved config; "5m" read too
        try:
            idle_s = duration_s(r["session_idle_timeout"], "stage.rollout.session_idle_timeout")
        except ValueError as e:
            raise BadInput(str(e)) from None
        if idle_s <= 0:
            raise BadInput(
                f"stage.rollout.session_idle_timeout: expected a positive duration such as 5m, "
                f"got {r['session_idle_timeout']!r}"
            )
        r["session_idle_timeout_s"] = idle_s
    return r


def stats_uri(spec, stage: dict) -> str:
    """The sampler's statistics: stage.sampling.stats_uri, else one table per pipeline run, next to its stages
    (so RFT's pass rates seed RL's sampler)."""
    uri = (stage.get("sampling") or {}).get("stats_uri")
    if uri:
        return uri
    return spec.output_prefix.rstrip("/").rsplit("/", 1)[0] + "/sampling/stats.json"


class Rollouts:
    def __init__(self, server: Child, driver: Child, proxy: str):
        self.server, self.driver, self.proxy = server, driver, proxy

    @classmethod
    def start(
        cls,
        ctx,
        policy_dir: Path,
        version: int,
        cursor: int,
        stats_file: Path | None,
        mode: str,
        steps: int = 0,
        groups: int = 0,
        ledger_generation: str | None = None,
    ) -> Rollouts:
        spec, stage = ctx.spec, ctx.spec.stage
        r = rollout_config(stage)
        try:
            tasks = load_tasks(stage.get("tasks") or {}, base_dir=TRAINER_DIR)
            limits = Limits.from_config(r.get("sandbox"))
        except (TaskFormatError, ValueError) as e:
            raise BadInput(str(e)) from None
        if not tasks:
            raise BadInput("stage.tasks: no tasks")
        work = Path(spec.work_dir)
        tasks_file = work / "tasks.jsonl"
        write_tasks_jsonl(tasks_file, tasks)
        node = shutil.which("node")
        if node is None:
            raise BadInput("the rl/rft stages need Node.js (`node`) on PATH for the data plane")

        env = dict(os.environ)
        serve_token = secrets.token_hex(16)
        env["TRAINFLOW_SERVE_ADMIN_TOKEN"] = serve_token
        env.setdefault("AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED", "true")
        if spec.storage.get("endpoint"):
            env.setdefault("TRAINFLOW_S3_ENDPOINT", spec.storage["endpoint"])
        server = Child(
            "serve",
            [
                sys.executable,
                "-m",
                "trainflow_trainer.serve",
                "--checkpoint",
                str(policy_dir),
                "--port",
                "0",
                "--policy-version",
                str(version),
                "--threads",
                "1",
            ],
            SERVE_LINE_PREFIX.rstrip(),
            cwd=str(TRAINER_DIR),
            env=env,
        )
        driver = None
        try:
            info = ServeReady.model_validate(server.next_message(120, ctx.stop_requested.is_set))
            ctx.log(f"trainflow: inference server on {info.host}:{info.port} (policy version {info.policy_version})")
            dspec = {
                "mode": mode,
                "upstreams": [f"http://{info.host}:{info.port}"],
                "upstream_admin_token": serve_token,
                "ledger_dir": str(work / "ledger"),
                # the ledger ships to S3 next to the stage's checkpoints (src/rl/driver.ts: ledger_uri)
                "ledger_uri": spec.output_prefix.rstrip("/") + "/ledger"
                if spec.output_prefix.startswith("s3://")
                else None,
                "ledger_generation": ledger_generation,
                "tasks_file": str(tasks_file),
                "group_size": r["group_size"],
                "batch_groups": r["batch_groups"],
                "concurrency": r["concurrency"],
                "max_staleness": r["max_staleness"],
                "initial_version": version,
                "cursor": cursor,
                "steps": steps,
                "groups": groups,
                "sampling": stage.get("sampling") or {},
                "stats_uri": stats_uri(spec, stage),
                "seed": int((stage.get("train") or {}).get("seed", 0)),
                # rl: agent sessions idle this long are dropped (absent: the driver's default)
                "session_idle_timeout_s": r.get("session_idle_timeout_s"),
                "storage": spec.storage,
                "agent": {
                    "python": sys.executable,
                    "cwd": str(TRAINER_DIR),
                    "workers": 1,
                    "max_turns": r["max_turns"],
                    "max_tokens": r["max_new_tokens"],
                    "temperature": float(r["temperature"]),
                    "top_p": float(r["top_p"]),  # the trainer's log-probs use the same (rl/objective.py)
                    "timeout_s": limits.timeout_s,
                },
            }
            if stats_file is not None:
                dspec["stats_file"] = str(stats_file)
            dspec["sampling"].pop("stats_uri", None)
            spec_file = work / f"driver-{mode}.json"
            # the contract's DriverSpec (src/contract/driver.ts): a field the driver would refuse fails here
            spec_file.write_text(DriverSpec.model_validate(dspec).model_dump_json(indent=1, exclude_unset=True))
            driver = Child(
                "dataplane",
                [node, str(CLI), "rl-driver", str(spec_file)],
                RL_LINE_PREFIX.rstrip(),
                cwd=str(REPO_DIR),
                env=env,
                stdin=True,
            )
            ready = driver_message(driver.next_message(120, ctx.stop_requested.is_set))
            if not isinstance(ready, DriverReady):
                raise RuntimeError(f"data plane: expected ready, got {ready.type!r}")
            origin = {"local": "this machine's", "s3": "restored from S3", "new": "a new ledger"}[ready.ledger_from]
            ctx.log(
                f"trainflow: data plane on {ready.proxy} (ledger holds {ready.ledger_size} records; "
                f"{origin}: {ready.ledger_note})"
            )
            return cls(server, driver, ready.proxy)
        except BaseException:
            if driver is not None:
                driver.stop()
            server.stop()
            raise

    def next_message(self, ctx, timeout: float = 1800) -> DriverReady | DriverBatch | DriverCollected | DriverDone:
        return driver_message(self.driver.next_message(timeout, ctx.stop_requested.is_set))

    def trained(self, weights_dir: Path, version: int) -> None:
        self.driver.send(Trained(type="trained", checkpoint=str(weights_dir), version=version).model_dump())

    def close(self) -> None:
        self.driver.stop()
        self.server.stop()

    def __enter__(self) -> Rollouts:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
