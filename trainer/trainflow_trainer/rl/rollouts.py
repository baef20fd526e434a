"""The rollout side of a stage as a child process: the data-plane driver (src/rl/driver.ts: the fleet of
inference engines + proxy + ledger + sampler + rollout manager + agent workers). The driver starts the
engines itself (src/dataplane/fleet.ts) from the launch template `engines` below (rollout.inference.backend:
the CPU server or vLLM, whose command lines live in engines/), so it can restart one that dies and
stop/start the colocated ones around training (tag scheduling).

    with Rollouts.start(ctx, stage, policy_dir, version, cursor, stats_file, mode="rl") as ro:
        msg = ro.next_message()            # {"type": "batch", groups, cursor, sampler_stats, metrics, ...}
        ro.trained(weights_dir, version)   # the manager pauses the server, reloads, resumes

The driver dies with the job (processes.Child), the engines with the driver (their parent-death signal);
leaving the `with` stops them.
"""

from __future__ import annotations

import os
import secrets
import shutil
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import ValidationError

from ..contract import (
    RL_LINE_PREFIX,
    DriverBatch,
    DriverCollected,
    DriverDone,
    DriverMessage,
    DriverReady,
    DriverSpec,
    Trained,
)
from ..engines import local as local_engine
from ..engines import vllm as vllm_engine
from ..errors import BadInput
from ..sandbox import Limits
from ..tasks import TaskFormatError, load_tasks, write_tasks_jsonl
from .processes import Child

if TYPE_CHECKING:
    from ..contract import JobSpec
    from ..contract.models import Inference
    from ..job import JobContext

TRAINER_DIR = Path(__file__).resolve().parents[2]
REPO_DIR = TRAINER_DIR.parent
CLI = REPO_DIR / "bin" / "trainflow.js"  # `trainflow rl-driver SPEC` runs src/rl/driver.ts


def driver_message(raw: dict) -> DriverReady | DriverBatch | DriverCollected | DriverDone:
    """A `TRAINFLOW_RL` line of the driver as the contract's model (src/contract/driver.ts)."""
    try:
        return DriverMessage.model_validate(raw).root
    except ValidationError as e:
        raise RuntimeError(f"data plane: a message outside the driver protocol: {e}") from None


def stats_uri(spec: JobSpec) -> str:
    """The sampler's statistics: stage.sampling.stats_uri, else one table per pipeline run, next to its stages
    (so RFT's pass rates seed RL's sampler)."""
    sampling = spec.stage.sampling
    if sampling is not None and sampling.stats_uri:
        return sampling.stats_uri
    return spec.output_prefix.rstrip("/").rsplit("/", 1)[0] + "/sampling/stats.json"


def engines(inference: Inference, policy_dir: Path, env: Mapping[str, str]) -> dict:
    """The driver's `engines` block (src/contract/driver.ts): the backend's launch template (the same command
    line its engines/ module starts one engine with), `servers` of them on shares of this job's CPUs (one
    server: unpinned, one thread, as before); vLLM's on a GPU host each on its own slice of the GPUs (`env`'s
    CUDA_VISIBLE_DEVICES, else all the host's), tensor-parallel over it. The engines inherit the driver's
    environment (`env`: TRAINFLOW_SERVE_ADMIN_TOKEN); the proxy controls them as `upstream_engine` says
    (src/dataplane/engines.ts)."""
    servers = inference.servers
    gpus: list[str] | None = None
    if inference.backend == "vllm":
        gpu = vllm_engine.gpu_host()
        # on GPUs each engine its own slice of the job's devices, tensor-parallel over it (None on CPU hosts)
        slices = vllm_engine.gpu_slices(servers, vllm_engine.visible_gpus(env)) if gpu else None
        gpus = [g for s in slices for g in s] if slices else None
        tp = len(slices[0]) if slices else 1
        argv, extra = vllm_engine.server_command("{checkpoint}", "{port}", env, gpu=gpu, tensor_parallel=tp)
        # vLLM loads a model in minutes on a busy CPU host; on GPU its sleep mode frees a taken-back engine
        template = {"argv": argv, "env": extra, "ready_timeout_s": 900, "sleep": "vllm" if gpu else "signal"}
    else:
        argv = local_engine.server_command("{checkpoint}", "{port}", "{version}", "{threads}")
        template = {"argv": argv, "ready_timeout_s": 300, "sleep": "signal"}
    return {
        "servers": servers,
        "colocated": inference.colocated,
        **template,
        "cwd": str(TRAINER_DIR),
        "health_path": "/health",
        "checkpoint": str(start_weights(policy_dir)),
        "cpus": sorted(os.sched_getaffinity(0)) if servers > 1 else None,
        "gpus": gpus,  # the fleet deals them out in the same equal slices (src/dataplane/fleet.ts shareOut)
    }


def start_weights(policy_dir: Path) -> Path:
    """The folder every engine starts from (then reloads to the current weights): hard links to the stage's
    first served weights, beside them, so it outlives their rotation (the stage keeps the last two versions)
    and a restarted engine always finds a complete folder, tokenizer included."""
    start = policy_dir.parent / "engine-start"
    shutil.rmtree(start, ignore_errors=True)
    shutil.copytree(policy_dir, start, copy_function=os.link)
    return start


class Rollouts:
    def __init__(self, driver: Child, proxy: str) -> None:
        self.driver, self.proxy = driver, proxy

    @classmethod
    def start(
        cls,
        ctx: JobContext,
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
        r, sampling = stage.rollout, stage.sampling
        assert r is not None and sampling is not None and stage.tasks is not None, "rft/rl blocks (the schema's)"
        try:
            tasks = load_tasks(stage.tasks, base_dir=TRAINER_DIR)
        except TaskFormatError as e:
            raise BadInput(str(e)) from None
        limits = Limits.from_config(r.sandbox)
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
        if spec.storage.endpoint:
            env.setdefault("TRAINFLOW_S3_ENDPOINT", spec.storage.endpoint)
        fleet = engines(r.inference, policy_dir, env)
        driver = None
        try:
            dspec: dict[str, object] = {
                "mode": mode,
                "upstreams": [],  # the driver starts the engines itself
                "engines": fleet,
                "upstream_engine": r.inference.backend,
                "upstream_admin_token": serve_token,
                "ledger_dir": str(work / "ledger"),
                # the ledger ships to S3 next to the stage's checkpoints (src/rl/driver.ts: ledger_uri)
                "ledger_uri": spec.output_prefix.rstrip("/") + "/ledger"
                if spec.output_prefix.startswith("s3://")
                else None,
                "ledger_generation": ledger_generation,
                "tasks_file": str(tasks_file),
                "group_size": r.group_size,
                "batch_groups": r.batch_groups,
                "concurrency": r.concurrency,
                "max_staleness": r.max_staleness,
                "initial_version": version,
                "cursor": cursor,
                "steps": steps,
                "groups": groups,
                "sampling": sampling.model_dump(exclude={"stats_uri"}),
                "stats_uri": stats_uri(spec),
                # an eval stage trains nothing: its tasks run in file order, and the seed only names the run
                "seed": stage.train.seed if stage.train is not None else 0,
                # rl: agent sessions idle this long are dropped (absent: the driver's default); config in ms
                "session_idle_timeout_s": None if r.session_idle_timeout is None else r.session_idle_timeout / 1000,
                "storage": spec.storage.model_dump(exclude_none=True),
                "agent": {
                    "python": sys.executable,
                    "cwd": str(TRAINER_DIR),
                    "workers": 1,
                    "max_turns": r.max_turns,
                    "max_tokens": r.max_new_tokens,
                    "temperature": r.temperature,
                    "top_p": r.top_p,  # the trainer's log-probs use the same (rl/objective.py)
                    "timeout_s": limits.timeout_s,
                    **(
                        {"byo": {"command": r.agent.command, "env": r.agent.env, "timeout_s": r.agent.timeout / 1000}}
                        if r.agent is not None
                        else {}
                    ),
                },
            }
            if stats_file is not None:
                dspec["stats_file"] = str(stats_file)
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
            # the driver answers once its engines serve (a fleet loads N models: minutes on a busy host)
            ready = driver_message(driver.next_message(fleet["ready_timeout_s"] + 60, ctx.stop_requested.is_set))
            if not isinstance(ready, DriverReady):
                raise RuntimeError(f"data plane: expected ready, got {ready.type!r}")
            origin = {"local": "this machine's", "s3": "restored from S3", "new": "a new ledger"}[ready.ledger_from]
            ctx.log(
                f"trainflow: data plane on {ready.proxy} (ledger holds {ready.ledger_size} records; "
                f"{origin}: {ready.ledger_note})"
            )
            return cls(driver, ready.proxy)
        except BaseException:
            if driver is not None:
                driver.stop()
            raise

    def next_message(
        self, ctx: JobContext, timeout: float = 1800
    ) -> DriverReady | DriverBatch | DriverCollected | DriverDone:
        return driver_message(self.driver.next_message(timeout, ctx.stop_requested.is_set))

    def trained(self, weights_dir: Path, version: int) -> None:
        self.driver.send(Trained(type="trained", checkpoint=str(weights_dir), version=version).model_dump())

    def close(self) -> None:
        self.driver.stop(grace=15.0)  # it stops its engines first

    def __enter__(self) -> Rollouts:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
