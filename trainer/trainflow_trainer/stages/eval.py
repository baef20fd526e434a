"""Evaluation as a stage (`kind: eval`): the stage's tasks through the rollout engine without training.

The input checkpoint's weights (no optimizer) serve `eval.samples` samples of every task, once each, at
`rollout.temperature` (the data plane's "eval" mode: the RFT collect path with the tasks in file order and the
sampler's statistics left alone). The stage reports

    pass@K           for each K of eval.pass_k: the unbiased estimator of Chen et al. (2021),
                     1 - C(n-c, K) / C(n, K) for a task with c passing of n samples, averaged over tasks
    pass_rate        passing samples / samples (a sample passes when its reward is 1, as RFT's `keep: passing`)
    pass_rate_level_N  the same over the tasks whose meta.difficulty is N (the demo family carries levels)
    reward_mean, tasks, samples, episodes, turns_mean

as its metrics (gates and the pipeline's promotion rule read them). The result is committed under the stage's
output prefix (step-000001/eval.json, with the checkpoint it evaluated), so a retry after the commit reports it
again instead of re-running the rollouts, and the job activity passes the evaluated checkpoint on as the stage's
output: later stages continue from the same weights.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from math import comb
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..checkpoint import COMMIT_FILE, commit, read_commit, step_dir
from ..contract import DriverCollected, StageConfig
from ..contract.models import CheckpointInit
from ..errors import BadInput, Preempted
from ..rl.rollouts import TRAINER_DIR, Rollouts
from ..runtime import committed_result, open_checkpoint, resolve_tokenizer
from ..storage import is_s3, join
from ..tasks import TaskFormatError, load_tasks
from ..tokenizer import TOKENIZER_FILE
from ..tracking import Tracker

if TYPE_CHECKING:
    from ..job import JobContext

RESULT_FILE = "eval.json"
EVAL_STEP = 1


@dataclass(frozen=True)
class TaskResult:
    """The samples of one task: its difficulty level (None when the task has none) and each sample's reward."""

    task_id: str
    level: int | None
    rewards: tuple[float, ...]

    @property
    def passed(self) -> int:
        return sum(1 for r in self.rewards if r >= 1.0)


def pass_at_k(n: int, c: int, k: int) -> float:
    """The unbiased pass@k of one task with c passing of n samples: 1 - C(n-c, k) / C(n, k) (exact integers)."""
    if not 0 <= c <= n or not 1 <= k <= n:
        raise ValueError(f"pass@{k} needs 1 <= k <= n and 0 <= c <= n (n={n}, c={c})")
    return 1.0 - comb(n - c, k) / comb(n, k)


def summarise(results: Sequence[TaskResult], ks: Sequence[int]) -> dict[str, float]:
    """The eval metrics of these tasks' samples (see the module docstring)."""
    if not results:
        raise ValueError("no tasks were evaluated")
    metrics: dict[str, float] = {}
    for k in ks:
        metrics[f"pass@{k}"] = sum(pass_at_k(len(t.rewards), t.passed, k) for t in results) / len(results)
    rewards = [r for t in results for r in t.rewards]
    metrics["reward_mean"] = sum(rewards) / len(rewards)
    metrics["pass_rate"] = sum(t.passed for t in results) / len(rewards)
    for level in sorted({t.level for t in results if t.level is not None}):
        at = [t for t in results if t.level == level]
        metrics[f"pass_rate_level_{level}"] = sum(t.passed for t in at) / sum(len(t.rewards) for t in at)
    metrics["tasks"] = float(len(results))
    metrics["samples"] = float(len(rewards))
    return metrics


def task_results(groups: list[dict[str, Any]], levels: dict[str, int | None]) -> list[TaskResult]:
    """One TaskResult per collected group (the data plane's GroupRecords), in task order."""
    out = [
        TaskResult(g["task_id"], levels.get(g["task_id"]), tuple(float(t["reward"]) for t in g["trajectories"]))
        for g in groups
    ]
    order = {tid: i for i, tid in enumerate(levels)}
    return sorted(out, key=lambda t: order.get(t.task_id, len(order)))


def eval_settings(stage: StageConfig) -> tuple[int, list[int]]:
    """(samples per task, the k of pass@k): the resolved `eval` block (the schema checked k <= samples)."""
    assert stage.eval is not None, "the schema resolves the eval block of eval stages"
    return stage.eval.samples, list(stage.eval.pass_k)


def evaluated_checkpoint(ctx: JobContext) -> str:
    """The checkpoint an eval stage scores: its input (the previous stage's output, or the pipeline's init)."""
    init = ctx.spec.model.init
    uri = ctx.spec.input_checkpoint or (init.checkpoint if isinstance(init, CheckpointInit) else None)
    if not uri:
        raise BadInput(
            "an eval stage scores a checkpoint: put it after a training stage, or start the pipeline from "
            "model.init {checkpoint: ...} or {from_pipeline: ...}"
        )
    return uri


def servable(ctx: JobContext, uri: str) -> Path:
    """A local HF folder of the checkpoint's weights with its tokenizer, for the inference server."""
    local = open_checkpoint(ctx, uri, "input_checkpoint")
    commit_file = local / COMMIT_FILE
    if is_s3(uri) and not commit_file.is_file():
        # the server trusts a step-NNNNNN folder only with its commit record (serve/weights.py), which the
        # download to the cache leaves behind: the verified manifest goes with the files
        commit_file.write_text(json.dumps(read_commit(uri, ctx.storage)))
    if (local / TOKENIZER_FILE).is_file():
        return local
    folder = Path(ctx.spec.work_dir) / "policy" / "eval"
    shutil.rmtree(folder, ignore_errors=True)
    shutil.copytree(local, folder)
    resolve_tokenizer(ctx, [local]).save(folder)
    return folder


def collect(
    ctx: JobContext, weights: Path, samples: int
) -> tuple[list[dict[str, Any]], dict[str, float], dict[str, int | None]]:
    """Every task once with `samples` samples (the rollout block's group size replaced by eval.samples)."""
    stage = ctx.spec.stage
    assert stage.tasks is not None and stage.rollout is not None, "the schema resolves them for eval stages"
    try:
        tasks = load_tasks(stage.tasks, base_dir=TRAINER_DIR)
    except TaskFormatError as e:
        raise BadInput(str(e)) from None
    levels = {t.id: _level(t.meta.get("difficulty")) for t in tasks}
    rollout = stage.rollout.model_copy(update={"group_size": samples})
    ctx.spec = ctx.spec.model_copy(update={"stage": stage.model_copy(update={"rollout": rollout})})
    try:
        with Rollouts.start(ctx, weights, 0, -1, None, "eval", groups=len(tasks)) as ro:
            try:
                msg = ro.next_message(ctx)
            except InterruptedError:
                raise Preempted() from None
    finally:
        ctx.spec = ctx.spec.model_copy(update={"stage": stage})
    if not isinstance(msg, DriverCollected):
        raise RuntimeError(f"data plane: expected the collected rollouts, got {msg.type!r}")
    return [g.model_dump(mode="json", exclude_unset=True) for g in msg.groups], msg.metrics, levels


def _level(v: Any) -> int | None:
    return v if isinstance(v, int) and not isinstance(v, bool) else None


def commit_result(ctx: JobContext, result: dict[str, Any]) -> str:
    spec = ctx.spec
    uri = join(spec.output_prefix, step_dir(EVAL_STEP))
    local = Path(uri) if not is_s3(uri) else Path(spec.work_dir) / "staging" / step_dir(EVAL_STEP)
    shutil.rmtree(local, ignore_errors=True)
    local.mkdir(parents=True)
    (local / RESULT_FILE).write_text(json.dumps(result, indent=1) + "\n")
    commit(local, uri, EVAL_STEP, True, ctx.storage)
    if is_s3(uri):
        shutil.rmtree(local, ignore_errors=True)
    return uri


def run(ctx: JobContext) -> None:
    spec = ctx.spec
    samples, ks = eval_settings(spec.stage)
    ctx.status.update(total_steps=EVAL_STEP)
    committed = committed_result(ctx, RESULT_FILE)
    if committed is not None:
        uri, result = committed
        ctx.log(f"trainflow: {uri} holds this stage's committed eval of {result['checkpoint']}: reported again")
    else:
        checkpoint = evaluated_checkpoint(ctx)
        groups, rollout_metrics, levels = collect(ctx, servable(ctx, checkpoint), samples)
        metrics = summarise(task_results(groups, levels), ks)
        for key in ("episodes", "turns_mean"):
            metrics[key] = float(rollout_metrics.get(key, 0.0))
        result = {"checkpoint": checkpoint, "samples": samples, "pass_k": ks, "metrics": metrics}
        # tracked like every stage's metrics (tracking.py), logged once, before the result is committed
        tracker = Tracker(spec, ctx.storage, resumed_step=None, enabled=ctx.dist.is_main)
        tracker.log(EVAL_STEP, {**metrics, "attempt": float(spec.attempt)})
        tracker.close()
        uri = commit_result(ctx, result)
        ctx.log(
            f"trainflow: eval of {checkpoint}: "
            + ", ".join(f"{k} {v:.3f}" for k, v in metrics.items() if k.startswith("pass"))
        )
    ctx.status.update(step=EVAL_STEP, metrics=result["metrics"], last_checkpoint=uri, last_checkpoint_step=EVAL_STEP)
