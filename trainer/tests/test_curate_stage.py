"""The curate stage (`kind: curate`) as the job activity runs it: a small real synthesis (isodate's sdist and its
own test suite, through the shared sdist cache), checked, committed once; a later stage's `tasks.from` reads the
committed instances, verified, with the sdists they name."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from specs import job_spec

from trainflow_trainer.contract.constants import EXIT_BAD_INPUT
from trainflow_trainer.sandbox import confinement as cf

pytestmark = pytest.mark.skipif(not cf.bwrap_works()[0], reason="needs bwrap: " + cf.bwrap_works()[1])

TRAINER = Path(__file__).resolve().parents[1]
MODEL: dict[str, Any] = {"init": {"preset": "tiny"}, "tokenizer": {"path": "/unused/tokenizer.json"}}
CURATE = {
    "packages": ["isodate==0.7.2"],
    "per_package": 2,
    "max_candidates": 8,
    "combine": 1,
    "seed": 0,
    "test_requirements": ["pytest==8.3.4"],
    "time_budget_s": 600,
}


def run_job(tmp: Path, spec: dict[str, Any]) -> subprocess.CompletedProcess[str]:
    (tmp / "spec.json").write_text(json.dumps(spec))
    cmd = [sys.executable, "-m", "trainflow_trainer.job", "--spec", str(tmp / "spec.json")]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(cmd, cwd=TRAINER, capture_output=True, text=True, timeout=900, env=env)


@pytest.fixture(scope="module")
def curated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The committed output of one curate stage run (step-000001)."""
    tmp = tmp_path_factory.mktemp("curate")
    out = tmp / "out"
    spec = job_spec({"name": "curate", "kind": "curate", "curate": CURATE}, MODEL, str(out), tmp / "work")
    r = run_job(tmp, spec)
    assert r.returncode == 0, r.stderr[-3000:]
    return out / "step-000001"


def test_curate_stage_synthesises_checks_and_commits_once(curated: Path, tmp_path: Path) -> None:
    from trainflow_trainer.tasks.swe import load_instances

    manifest = json.loads((curated / "COMMIT.json").read_text())
    assert manifest["final"] is True and manifest["step"] == 1
    assert {"tasks.jsonl", "curate.json", "sdists/isodate-0.7.2.tar.gz"} <= {f["path"] for f in manifest["files"]}
    result = json.loads((curated / "curate.json").read_text())
    m = result["metrics"]
    instances, unusable = load_instances(curated / "tasks.jsonl")
    assert unusable == [] and len(instances) == m["valid"] >= 1
    assert m["instances"] == m["valid"] + m["rejected"] and m["packages_with_instances"] == 1
    assert result["packages"] == {
        "isodate==0.7.2": {"instances": m["instances"], "valid": m["valid"], "rejected": m["rejected"]}
    }
    assert result["curate"]["per_package"] == 2 and result["curate"]["test_requirements"] == ["pytest==8.3.4"]
    assert len(instances) <= 2  # per_package
    raw = [json.loads(ln) for ln in (curated / "tasks.jsonl").read_text().splitlines()]
    assert all(r["snapshot"]["path"] == "sdists/isodate-0.7.2.tar.gz" for r in raw)  # relative: the commit travels
    status = json.loads((curated.parent / "status.json").read_text())
    assert status["metrics"]["valid"] == m["valid"] and status["last_checkpoint"] == str(curated)

    # a retry after the commit reports the committed tasks again: no synthesis, the commit untouched
    before = (curated / "COMMIT.json").stat().st_mtime_ns
    spec = job_spec({"name": "curate", "kind": "curate", "curate": CURATE}, MODEL, str(curated.parent), tmp_path)
    r = run_job(tmp_path, spec)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "reported again" in r.stderr and "synthesised" not in r.stderr
    assert (curated / "COMMIT.json").stat().st_mtime_ns == before

    # fewer valid instances than min_instances: the stage fails as bad input, with nothing committed
    bad = tmp_path / "bad"
    block = {**CURATE, "min_instances": 50, "max_candidates": 2}
    spec = job_spec({"name": "curate", "kind": "curate", "curate": block}, MODEL, str(bad), tmp_path / "w2")
    r = run_job(tmp_path, spec)
    assert r.returncode == EXIT_BAD_INPUT, r.stderr[-3000:]
    assert "fewer than curate.min_instances 50" in r.stderr
    assert not (bad / "step-000001" / "COMMIT.json").exists()


def test_tasks_from_reads_the_committed_instances(curated: Path, tmp_path: Path) -> None:
    """What the pipeline hands a stage with tasks {family: swe, from: curate}: tasks.path = the commit's
    tasks.jsonl. The job resolves it to a verified local copy; its instances build and their gold patches pass."""
    from trainflow_trainer.contract import JobSpec
    from trainflow_trainer.errors import BadInput
    from trainflow_trainer.job import JobContext
    from trainflow_trainer.stages.curate import resolve_curated_tasks
    from trainflow_trainer.tasks import load_tasks
    from trainflow_trainer.tasks.swe import environment_for, grade_patch, task_instance

    def spec_from(path: str) -> JobSpec:
        tasks = {"family": "swe", "path": path}
        stage = {"name": "score", "kind": "rft", "tasks": tasks, "rollout": {}, "train": {"steps": 1, "lr": 1e-3}}
        raw = job_spec(stage, MODEL, str(tmp_path / "out"), tmp_path / "work", stage_index=1)
        raw["stage"]["tasks"]["from"] = "curate"  # as workflows/pipeline.ts rewrites it
        return JobSpec.model_validate(raw)

    ctx = JobContext(spec_from(str(curated / "tasks.jsonl")))
    resolve_curated_tasks(ctx)
    assert ctx.spec.stage.tasks is not None
    tasks = load_tasks(ctx.spec.stage.tasks)
    assert len(tasks) >= 1
    inst = task_instance(tasks[0])
    assert grade_patch(environment_for(tasks[0]), inst.patch).reward == 1.0

    # a commit whose file does not match its manifest is refused, naming the stage
    tampered = tmp_path / "copy"
    subprocess.run(["cp", "-r", str(curated), str(tampered)], check=True)
    with open(tampered / "tasks.jsonl", "a") as f:
        f.write("\n")
    with pytest.raises(BadInput, match="tasks.from 'curate'"):
        resolve_curated_tasks(JobContext(spec_from(str(tampered / "tasks.jsonl"))))


def test_a_swe_verdict_carries_its_per_test_outcomes_into_the_episode(curated: Path) -> None:
    """agent/loop.py: Episode.tests = the verdict's per-test outcomes, in the contract's Episode line (the driver
    stores them with the trajectory; test/dataplane/proxy.test.ts checks the ledger record)."""
    from trainflow_trainer.agent.loop import Episode
    from trainflow_trainer.contract import Episode as EpisodeLine
    from trainflow_trainer.tasks.swe import environment_for, grade_patch, swe_tasks
    from trainflow_trainer.tasks.verify import Verdict

    task = swe_tasks(curated / "tasks.jsonl", 1)[0]
    g = grade_patch(environment_for(task), "")  # the unfixed tree: its FAIL_TO_PASS tests fail
    v = Verdict(g.reward, g.passed, g.reason, g.run, g.to_dict())
    assert v.tests == g.tests and set(v.tests) == set(g.fail_to_pass) | set(g.pass_to_pass)
    assert any(o != "passed" for o in (v.tests[t] for t in g.fail_to_pass))
    ep = Episode(task.id, [], v.reward, v.passed, v.reason, "answer", 1, 0, 0, 0, 0, 0.1, tests=v.tests)
    line = EpisodeLine.model_validate({"id": "r1", **ep.to_dict()})
    assert line.tests == g.tests
    assert Verdict(1.0, True, "correct").tests is None  # a verifier without named tests


def test_the_gold_trajectory_of_each_curated_instance_replays_through_the_tools_to_a_1(curated: Path) -> None:
    """On a real package's synthesised bugs: each instance's gold trajectory (tasks/swe/gold.py), its calls run
    through the reference agent's tools in the instance's sandbox, answers as recorded and grades 1.0."""
    from trainflow_trainer.agent.tools import ToolBox
    from trainflow_trainer.tasks.swe import environment_for, load_instances
    from trainflow_trainer.tasks.swe.gold import gold_trajectory

    instances, _ = load_instances(curated / "tasks.jsonl")
    assert instances
    for inst in instances:
        conv = gold_trajectory(inst)
        env = environment_for(inst)
        sandbox = env.sandbox()
        with (
            env.open_episode(sandbox) as ep,
            ToolBox(sandbox, workspace=ep.workspace, command_env=env.command_env(ep.root)) as tools,
        ):
            answers = []
            for m in conv["messages"]:
                if m["role"] == "assistant":
                    fn = m["tool_calls"][0]["function"]
                    answers.append(tools.call(fn["name"], fn["arguments"]))
            assert answers == [m["content"] for m in conv["messages"] if m["role"] == "tool"]
            assert tools.submitted
            grade = ep.grade()
        assert (grade.reward, grade.passed) == (1.0, True), (inst.instance_id, grade.reason)
