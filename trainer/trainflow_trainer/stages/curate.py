"""Task curation as a stage (`kind: curate`): the pipeline builds its own SWE tasks before RFT, RL or eval.

The stage runs `tasks synthesize` (tasks/swe/synth/pipeline.py) on the `curate` block's PyPI releases, then
`tasks check` (tasks/swe/check.py) on what it made, and commits under the stage's output prefix

    step-000001/tasks.jsonl    the instances that passed the check (their snapshots: sdists/, relative paths)
    step-000001/sdists/        the releases' source archives the instances are built from
    step-000001/curate.json    the report: counts, per package, each rejected instance with its problems

with the checkpoint protocol (checkpoint.py commit: a manifest of sha256s), so a retry after the commit reports
it again instead of synthesising anew. A curate stage trains nothing and has no model: the job activity passes
its commit on as the stage's output, and the pipeline keeps the previous weights flowing past it
(workflows/pipeline.ts); a later stage's `tasks: {family: swe, from: NAME}` is rewritten there to this commit's
tasks.jsonl, which `resolve_curated_tasks` fetches (verified) into the job's work dir before the stage runs.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..checkpoint import CheckpointError, commit, fetch_verified, step_dir
from ..contract.models import CurateConfig
from ..errors import BadInput
from ..runtime import committed_result
from ..storage import is_s3, join

if TYPE_CHECKING:
    from ..job import JobContext
    from ..tasks.swe.instance import SweInstance

RESULT_FILE = "curate.json"
TASKS_FILE = "tasks.jsonl"
SDIST_DIR = "sdists"
CURATE_STEP = 1


def synthesize_and_check(block: CurateConfig, work: Path, log: Any = print) -> tuple[Path, dict[str, Any]]:
    """Synthesises into work/, checks every instance, keeps the valid ones in work/out/tasks.jsonl (with the
    sdists they name) and returns that folder and the report."""
    from ..tasks.swe import load_instances
    from ..tasks.swe.check import check_file
    from ..tasks.swe.instance import write_instances
    from ..tasks.swe.synth.package import DEFAULT_TEST_REQUIREMENTS, PackageError, parse_spec
    from ..tasks.swe.synth.pipeline import synthesize

    try:
        for spec in block.packages:
            parse_spec(spec)
    except PackageError as e:
        raise BadInput(f"stage.curate.packages: {e}") from None
    shutil.rmtree(work, ignore_errors=True)
    made = work / "synth" / TASKS_FILE
    synth = synthesize(
        list(block.packages),
        made,
        per_package=block.per_package,
        max_candidates=block.max_candidates,
        combine=block.combine,
        seed=block.seed,
        test_requirements=tuple(block.test_requirements or DEFAULT_TEST_REQUIREMENTS),
        time_budget_s=block.time_budget_s,
    )
    log(f"trainflow: curate: {synth['instances']} instances synthesised in {synth['seconds']}s; checking them")
    checked = check_file(made, emit=False)
    instances, _ = load_instances(made)
    bad = set(checked["invalid"])
    # load_instances made the snapshot paths absolute: the committed file names them relative to itself again
    valid = [_relative_snapshot(i) for i in instances if i.instance_id not in bad]
    out = work / "out"
    write_instances(out / TASKS_FILE, valid)
    for name in sorted({Path(i.snapshot.path).name for i in valid if i.snapshot is not None}):
        (out / SDIST_DIR).mkdir(parents=True, exist_ok=True)
        shutil.copyfile(made.parent / SDIST_DIR / name, out / SDIST_DIR / name)
    return out, report(block, synth, checked, [i.instance_id for i in valid])


def _relative_snapshot(inst: SweInstance) -> SweInstance:
    if inst.snapshot is None:
        return inst
    snap = inst.snapshot.model_copy(update={"path": f"{SDIST_DIR}/{Path(inst.snapshot.path).name}"})
    return inst.model_copy(update={"snapshot": snap})


def _package_of(instance_id: str, specs: list[str]) -> str:
    """The release (of `specs`) an instance was made from: make_instance names it NAME__VERSION.KINDS.DIGEST
    (NAME as the sdist spells it: compared normalised, PEP 503)."""

    def norm(s: str) -> str:
        return re.sub(r"[-_.]+", "-", s).lower()

    for spec in specs:
        name, _, version = spec.partition("==")
        if norm(instance_id).startswith(f"{norm(name)}-{norm(version)}-"):
            return spec
    return instance_id.split("__", 1)[0]


def report(block: CurateConfig, synth: dict, checked: dict, valid_ids: list[str]) -> dict[str, Any]:
    problems: dict[str, list[str]] = checked.get("problems", {})
    per_package: dict[str, dict[str, Any]] = {}
    for rep in synth["packages"]:
        entry = {"instances": rep["instances"], "valid": 0, "rejected": 0}
        if rep.get("error"):
            entry["error"] = rep["error"]
        per_package[rep["package"]] = entry
    for key, ids in (("valid", valid_ids), ("rejected", checked["invalid"])):
        for iid in ids:
            per_package.setdefault(_package_of(iid, block.packages), {"instances": 0, "valid": 0, "rejected": 0})
            per_package[_package_of(iid, block.packages)][key] += 1
    metrics = {
        "instances": float(synth["instances"]),
        "valid": float(len(valid_ids)),
        "rejected": float(len(checked["invalid"])),
        "packages_with_instances": float(sum(p["valid"] > 0 for p in per_package.values())),
    }
    return {
        "curate": block.model_dump(mode="json", exclude_none=True),
        "metrics": metrics,
        "packages": per_package,
        "rejected": [{"instance_id": i, "problems": problems.get(i, [])} for i in checked["invalid"]],
        "unusable": checked["unusable"],
        "seconds": {"synthesize": synth["seconds"], "check": checked["seconds"]},
        "tasks": TASKS_FILE,
    }


def commit_curated(ctx: JobContext, folder: Path, result: dict[str, Any]) -> str:
    """Commits the folder (tasks.jsonl, sdists/) with the report as this stage's final step."""
    spec = ctx.spec
    uri = join(spec.output_prefix, step_dir(CURATE_STEP))
    (folder / RESULT_FILE).write_text(json.dumps(result, indent=1) + "\n")
    if is_s3(uri):
        commit(folder, uri, CURATE_STEP, True, ctx.storage)
    else:
        local = Path(uri)
        shutil.rmtree(local, ignore_errors=True)
        shutil.copytree(folder, local)
        commit(local, uri, CURATE_STEP, True, ctx.storage)
    return uri


def run(ctx: JobContext) -> None:
    spec = ctx.spec
    block = spec.stage.curate
    assert block is not None, "the schema requires the curate block of curate stages"
    ctx.status.update(total_steps=CURATE_STEP)
    committed = committed_result(ctx, RESULT_FILE)
    if committed is not None:
        uri, result = committed
        ctx.log(f"trainflow: {uri} holds this stage's committed tasks: reported again")
    else:
        folder, result = synthesize_and_check(block, Path(spec.work_dir) / "curate", log=ctx.log)
        valid = int(result["metrics"]["valid"])
        if valid < block.min_instances:
            why = "; ".join(f"{r['instance_id']}: {', '.join(r['problems'])}" for r in result["rejected"][:3])
            raise BadInput(
                f"stage.curate: {valid} valid instance(s) of {int(result['metrics']['instances'])} made, "
                f"fewer than curate.min_instances {block.min_instances} (raise per_package or max_candidates, "
                f"add packages{'; rejected: ' + why if why else ''})"
            )
        uri = commit_curated(ctx, folder, result)
        shutil.rmtree(folder.parent, ignore_errors=True)
        ctx.log(f"trainflow: curate: {valid} checked instances committed at {uri}")
    metrics = result["metrics"]
    ctx.status.update(step=CURATE_STEP, metrics=metrics, last_checkpoint=uri, last_checkpoint_step=CURATE_STEP)


def resolve_curated_tasks(ctx: JobContext) -> None:
    """A stage whose tasks (or gold-trajectory data sources) come `from` a curate stage: the pipeline set their
    path to that stage's committed tasks.jsonl (local or s3://); fetch the commit verified (its sdists with it)
    and point the path at the local copy, so every reader (load_tasks, the rollout workers, the SFT data) sees
    a local file."""
    stage = ctx.spec.stage
    update: dict[str, Any] = {}
    if stage.tasks is not None and stage.tasks.from_ is not None:
        path = _fetch_curated(ctx, stage.tasks.from_, stage.tasks.path, "tasks.from")
        update["tasks"] = stage.tasks.model_copy(update={"path": path})
    if stage.data is not None and any(s.from_ is not None for s in stage.data.sources):
        sources = [
            s
            if s.from_ is None
            else s.model_copy(update={"path": _fetch_curated(ctx, s.from_, s.path, f"data.sources[{j}].from")})
            for j, s in enumerate(stage.data.sources)
        ]
        update["data"] = stage.data.model_copy(update={"sources": sources})
    if update:
        ctx.spec = ctx.spec.model_copy(update={"stage": stage.model_copy(update=update)})


def _fetch_curated(ctx: JobContext, name: str, tasks_path: str | None, field: str) -> str:
    """The local copy of curate stage `name`'s committed tasks.jsonl, which the pipeline named `tasks_path`."""
    if not tasks_path:
        raise BadInput(
            f"stage.{field} {name!r}: the pipeline did not resolve it to the curate stage's output "
            "(run this stage in its pipeline, after the curate stage)"
        )
    commit_uri = tasks_path.rstrip("/").rsplit("/", 1)[0]
    try:
        local, _ = fetch_verified(commit_uri, ctx.storage, Path(ctx.spec.work_dir) / "inputs" / f"curated-{name}")
    except CheckpointError as e:
        raise BadInput(f"stage.{field} {name!r}: {e}") from None
    path = str(local / TASKS_FILE)
    ctx.log(f"trainflow: {field}: curate stage {name}: {commit_uri} ({path})")
    return path
