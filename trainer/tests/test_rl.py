"""The RL stage: records → trajectories, and the whole stage as a real job (inference server, data-plane
driver with the sampler and rollout manager, agent workers, trainer) killed with SIGKILL mid-run and resumed:
the ledger cursor and sampler statistics survive, no group is trained twice or lost, no child outlives the job.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from specs import job_spec, rollout_stage, stage_configs

from trainflow_trainer.rl.batch import group_advantages, to_trajectories, tree_paths
from trainflow_trainer.rl.ledger_check import ledger_size, read_ledger
from trainflow_trainer.trie.builder import Floats

TRAINER = Path(__file__).resolve().parents[1]


def node(tokens, logprobs=None, versions=None, children=()):
    n = len(tokens)
    return {
        "tokens": tokens,
        "logprobs": logprobs or [None] * n,
        "versions": versions or [None] * n,
        "children": list(children),
        "turns": [],
    }


def values(xs: Floats | None) -> list[float]:
    """A trajectory's per-token field as a list (the field is optional on Trajectory; these tests set it)."""
    assert xs is not None
    return [float(x) for x in xs]


def session(reward, tree):
    return {"trajectory_id": "t", "reward": reward, "tree": tree}


def test_tree_paths_and_trajectories_use_recorded_ids_and_mask_generated_tokens():
    # a two-turn session: prompt [1 2], output [3 4] (v0), tool text [5], output [6] (v1)
    tree = node(
        [],
        children=[
            node(
                [1, 2],
                children=[node([3, 4], [-0.5, -0.25], [0, 0], children=[node([5], children=[node([6], [-1.0], [1])])])],
            )
        ],
    )
    assert tree_paths(tree) == [
        ([1, 2, 3, 4, 5, 6], [None, None, -0.5, -0.25, None, -1.0], [None, None, 0, 0, None, 1])
    ]
    other = node([], children=[node([1, 2, 7], [None, None, -2.0], [None, None, 1])])
    groups = [{"group_id": "g", "trajectories": [session(1.0, tree), session(0.0, other)]}]
    trajs, stats = to_trajectories(groups, trainer_version=2)
    assert [list(t.tokens) for t in trajs] == [[1, 2, 3, 4, 5, 6], [1, 2, 7]]
    assert values(trajs[0].loss_mask) == [0, 0, 1, 1, 0, 1]
    assert values(trajs[0].logprobs) == [0, 0, -0.5, -0.25, 0, -1.0]
    a = group_advantages([1.0, 0.0])
    assert trajs[0].advantage == pytest.approx(a[0]) and trajs[0].advantage == pytest.approx(1.0, abs=1e-5)
    assert trajs[1].advantage == pytest.approx(-1.0, abs=1e-5)
    # staleness per generated token: (2-0)*2 + (2-1) + (2-1) over 4 tokens
    assert stats.staleness_mean == pytest.approx(6 / 4)
    assert stats.reward_mean == 0.5 and stats.pass_rate == 0.5 and stats.generated_tokens == 4
    assert group_advantages([1.0, 1.0, 1.0]) == [0.0, 0.0, 0.0]  # no signal: zero advantage everywhere
    assert np.allclose(group_advantages([1.0, 0.0, 0.0, 0.0], normalize_std=False), [0.75, -0.25, -0.25, -0.25])


def test_advantage_scaling_difficulty_and_entropy_scale_groups_relative_to_the_batch():
    from trainflow_trainer.rl.batch import advantage_scales

    def grp(rewards, lp):  # every session generated one token with log-prob lp
        return {
            "group_id": "g",
            "trajectories": [session(r, node([1], children=[node([2], [lp], [0])])) for r in rewards],
        }

    hard, easy = grp([1.0, 0.0, 0.0, 0.0], -2.0), grp([1.0, 1.0, 1.0, 0.0], -0.5)
    # pass rates 0.25 and 0.75: mean failure 0.5, scales 0.75/0.5 = 1.5 and 0.25/0.5 = 0.5
    assert advantage_scales([hard, easy], "difficulty") == pytest.approx([1.5, 0.5])
    # entropies 2.0 and 0.5: mean 1.25, scales 1.6 and 0.4 → clipped to 0.5
    assert advantage_scales([hard, easy], "entropy") == pytest.approx([1.6, 0.5])
    assert advantage_scales([hard, easy], "none") == [1.0, 1.0]
    plain, _ = to_trajectories([hard, easy], 0)
    scaled, _ = to_trajectories([hard, easy], 0, scaling="difficulty")
    assert [s.advantage for s in scaled] == pytest.approx(
        [p.advantage * f for p, f in zip(plain, [1.5] * 4 + [0.5] * 4)]
    )
    with pytest.raises(ValueError, match="advantage_scaling"):
        advantage_scales([hard], "bogus")
    from trainflow_trainer.rl.objective import objective

    (st,) = stage_configs(rollout_stage(algorithm={"advantage_scaling": "entropy", "loss_agg": "seq-mean"}))
    obj = objective(st)
    assert obj.scaling == "entropy" and obj.normalize_std is True and obj.loss.aggregation == "seq_mean"


def test_rft_keeps_passing_or_top_rollouts():
    from trainflow_trainer.stages.rft import select

    t = lambda r: {"reward": r, "tree": node([1, 2], children=[node([3], [-1.0], [0])])}  # noqa: E731
    groups = [{"trajectories": [t(1.0), t(0.0), t(0.5)]}, {"trajectories": [t(0.0), t(1.0), t(0.25)]}]
    passing, top, default = (
        st.rft
        for st in stage_configs(
            rollout_stage("rft", rft={"keep": "passing"}),
            rollout_stage("rft", rft={"keep": "top", "top_fraction": 0.5}),
            rollout_stage("rft"),
        )
    )
    assert passing is not None and top is not None and default is not None  # the resolver fills rft's block
    assert [x["reward"] for x in select(groups, passing)] == [1.0, 1.0]
    assert [x["reward"] for x in select(groups, top)] == [1.0, 1.0, 0.5]
    trajs, _ = to_trajectories([{"trajectories": select(groups, default)}], 0, mode="sft")
    assert [values(x.loss_mask) for x in trajs] == [[0, 0, 1]] * 2 and all(x.advantage == 0 for x in trajs)


def descendants(pid: int) -> set[int]:
    out, todo = set(), [pid]
    while todo:
        p = todo.pop()
        r = subprocess.run(["ps", "-o", "pid=", "--ppid", str(p)], capture_output=True, text=True)
        kids = {int(x) for x in r.stdout.split()}
        out |= kids
        todo.extend(kids)
    return out


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    return stat.exists() and stat.read_text().split()[2] != "Z"


def kill9_and_reap(job: subprocess.Popen, children: set[int]) -> None:
    """SIGKILLs a job; its children must follow (the kernel's parent-death signal stops the server and the data
    plane, which stops the agents): no orphans."""
    job.send_signal(signal.SIGKILL)
    job.wait()
    assert job.stdout is not None
    job.stdout.close()
    t_end = time.monotonic() + 20
    while any(alive(p) for p in children) and time.monotonic() < t_end:
        time.sleep(0.2)
    assert not [p for p in children if alive(p)], "children outlived the killed job"


def rl_stage(steps: int, **rollout: object) -> dict:
    """A small RL stage on the demo tasks, as a config says it (resolved by specs.job_spec)."""
    return {
        "name": "rl",
        "kind": "rl",
        "tasks": {"family": "demo", "count": 12},
        "rollout": {
            "group_size": 2,
            "concurrency": 4,
            "batch_groups": 2,
            "max_turns": 1,
            "max_new_tokens": 8,
            "max_staleness": 1,
            **rollout,
        },
        # a random model solves nothing: keep all-equal groups so batches still form
        "sampling": {"strategy": "difficulty", "filter_all_equal": False},
        "algorithm": {"name": "dapo", "clip_low": 0.2, "clip_high": 0.28, "loss_agg": "token-mean"},
        "packing": {"mode": "trie", "max_tokens": 2048},
        "train": {"steps": steps, "lr": 1e-4},
        "checkpoint": {"every": 2},
    }


def rl_model(tokenizer: Path) -> dict:
    return {"init": {"preset": "tiny"}, "tokenizer": {"path": str(tokenizer)}, "dtype": "fp32"}


def test_rl_stage_kill9_resumes_cursor_and_sampler_stats_without_training_a_group_twice(tmp_path, tokenizer):
    out, work = tmp_path / "out" / "rl", tmp_path / "work"
    spec = job_spec(rl_stage(steps=5), rl_model(tokenizer), str(out), work, stage_index=4)
    spec_file = tmp_path / "spec.json"
    spec_file.write_text(json.dumps(spec))
    cmd = [sys.executable, "-m", "trainflow_trainer.job", "--spec", str(spec_file)]

    # RFT first, in the same pipeline folder: its rollouts' pass rates are the table RL's sampler continues
    rft_stage = {
        "name": "rft",
        "kind": "rft",
        "tasks": {"family": "demo", "count": 4},
        "rollout": {"group_size": 2, "concurrency": 4, "max_turns": 1, "max_new_tokens": 8},
        "rft": {"keep": "passing"},
        "train": {"steps": 1, "batch_size": 4},
    }
    rft = job_spec(rft_stage, rl_model(tokenizer), str(tmp_path / "out" / "rft"), tmp_path / "work-rft", stage_index=3)
    (tmp_path / "rft.json").write_text(json.dumps(rft))
    r = subprocess.run(
        [sys.executable, "-m", "trainflow_trainer.job", "--spec", str(tmp_path / "rft.json")],
        cwd=TRAINER,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    assert "rft rollouts: 8 episodes" in r.stderr
    rft_stats = json.loads((tmp_path / "out" / "sampling" / "stats.json").read_text())
    assert sum(t["attempts"] for t in rft_stats["tasks"].values()) == 8

    # attempt 1: SIGKILL once step 2 is committed (steps are fast with the batched server: by the time the kill
    # lands, step 4 may be committed too; the test resumes from whichever commit is the latest)
    job = subprocess.Popen(cmd, cwd=TRAINER, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert job.stdout is not None
    children: set[int] = set()
    deadline = time.monotonic() + 150
    step = 0
    for line in job.stdout:
        children |= descendants(job.pid)
        if line.startswith("TRAINFLOW_STATUS"):
            step = json.loads(line.split(" ", 1)[1])["step"]
        if (out / "step-000002" / "COMMIT.json").exists() and step >= 2:
            break
        assert time.monotonic() < deadline, "attempt 1 did not reach a committed step 2"
    assert len(children) >= 3, f"expected server, data plane and agent worker children, saw {children}"
    kill9_and_reap(job, children)
    assert not (out / "step-000005" / "COMMIT.json").exists(), "attempt 1 finished before the kill landed"
    k = max(s for s in (2, 4) if (out / f"step-{s:06d}" / "COMMIT.json").exists())
    ckpt2 = json.loads((out / f"step-{k:06d}" / "trainer_state.json").read_text())
    stats2 = json.loads((out / f"step-{k:06d}" / "sampler_stats.json").read_text())

    # attempt 2: resumes from step k and finishes
    r = subprocess.run(cmd, cwd=TRAINER, capture_output=True, text=True, timeout=240)
    assert r.returncode == 0, r.stderr[-3000:]
    statuses = [json.loads(ln.split(" ", 1)[1]) for ln in r.stdout.splitlines() if ln.startswith("TRAINFLOW_STATUS")]
    assert statuses[-1]["resumed_from"] == {"uri": str(out / f"step-{k:06d}"), "step": k}
    final = json.loads((out / "step-000005" / "trainer_state.json").read_text())
    stats5 = json.loads((out / "step-000005" / "sampler_stats.json").read_text())
    assert json.loads((out / "step-000005" / "COMMIT.json").read_text())["final"] is True

    # the resumed lineage: steps 1-k as committed by attempt 1, then the rest
    hist = final["history"]
    assert [h["step"] for h in hist] == [1, 2, 3, 4, 5]
    assert hist[:k] == ckpt2["history"]
    # sampler statistics continued (the same table, saved again by the resumed run), not restarted: RFT's
    # table, then RL's. The resumed run may draw no new task at all: groups attempt 1 finished after its last
    # commit are in the ledger after the cursor, and they are the next batches (rollout.ts), so the number of
    # attempts may stay where it was.
    assert stats5["id"] == stats2["id"] == rft_stats["id"]
    assert stats5["step"] > stats2["step"]
    assert all(stats2["tasks"][k]["attempts"] >= v["attempts"] for k, v in rft_stats["tasks"].items())
    tries = lambda s: sum(t["attempts"] for t in s["tasks"].values())  # noqa: E731
    assert tries(stats5) >= tries(stats2) > 0

    # counted: every group the ledger holds up to the final cursor was trained exactly once, or dropped as stale
    trained = [g for h in hist for g in h["groups"]]
    dropped = [g for h in hist for g in h["dropped"]]
    assert len(trained) == len(set(trained)) == 5 * 2 - len(dropped)
    entries = read_ledger(work / "ledger")
    assert ledger_size(work / "ledger") == len(entries)
    upto = [
        e["record"]["group_id"] for e in entries if e["seq"] <= final["cursor"] and e["record"].get("kind") == "group"
    ]
    assert sorted(upto) == sorted(trained + dropped)
    for h in hist:  # a step trains only groups after the previous step's cursor
        assert h["cursor"] > (hist[hist.index(h) - 1]["cursor"] if h["step"] > 1 else -1)


def test_reward_rise_needs_three_standard_errors():
    from trainflow_trainer.rl.evidence import reward_rise

    hist = lambda rs: [{"step": i + 1, "episodes": 32, "metrics": {"reward_mean": r}} for i, r in enumerate(rs)]  # noqa: E731
    rising = reward_rise(hist([0.1, 0.1] + [0.3] * 16 + [0.5, 0.5]))
    assert rising["passed"] and rising["first"] == pytest.approx(0.1) and rising["last"] == pytest.approx(0.5)
    # se = sqrt(.09/64 + .25/64) ≈ 0.0729 → z ≈ 5.5
    assert rising["z"] == pytest.approx(0.4 / ((0.09 + 0.25) / 64) ** 0.5)
    assert not reward_rise(hist([0.3, 0.3] + [0.3] * 16 + [0.35, 0.35]))["passed"]  # too small a rise for 64 episodes
    assert not reward_rise(hist([0.5] * 20 + [0.1] * 2))["passed"]
    # the command the CI demo test and `make demo` run on an RL checkpoint's trainer_state.json
    import json
    import subprocess
    import sys
    import tempfile

    for rewards, code in (([0.1, 0.1] + [0.3] * 16 + [0.5, 0.5], 0), ([0.3] * 20, 1)):
        with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
            json.dump({"history": hist(rewards)}, f)
        p = subprocess.run(
            [sys.executable, "-m", "trainflow_trainer.rl.evidence", f.name],
            cwd=TRAINER,
            capture_output=True,
            text=True,
            timeout=60,
        )
        out = json.loads(p.stdout)
        assert p.returncode == code and out["passed"] == (code == 0) and out["rewards"] == rewards


def test_reward_rise_over_seeds_is_combined_and_a_fall_fails_it():
    """Stouffer's Z over the runs; a run that did not take off (z 0) is carried by a strong one, a run whose
    reward fell by 3 SE fails the check whatever the others did."""
    import json
    import subprocess
    import sys
    import tempfile

    from trainflow_trainer.rl.evidence import combined

    assert combined([{"z": 7.0}, {"z": 0.0}])["z"] == pytest.approx(7.0 / 2**0.5)
    assert combined([{"z": 7.0}, {"z": 0.0}])["passed"]
    assert not combined([{"z": 3.1}, {"z": 0.5}])["passed"]  # 2.55 combined
    assert not combined([{"z": 12.0}, {"z": -3.5}])["passed"]  # a collapse in one run
    assert combined([{"z": 3.0}])["passed"] and not combined([{"z": 2.9}])["passed"]
    with pytest.raises(ValueError):
        combined([])

    hist = lambda rs: [{"step": i + 1, "episodes": 32, "metrics": {"reward_mean": r}} for i, r in enumerate(rs)]  # noqa: E731
    files = []
    for rewards in ([0.1, 0.1] + [0.3] * 16 + [0.5, 0.5], [0.02] * 20):
        with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
            json.dump({"history": hist(rewards)}, f)
        files.append(f.name)
    p = subprocess.run(
        [sys.executable, "-m", "trainflow_trainer.rl.evidence", *files],
        cwd=TRAINER,
        capture_output=True,
        text=True,
        timeout=60,
    )
    out = json.loads(p.stdout)
    assert p.returncode == 0 and out["passed"] and [r["rewards"][0] for r in out["runs"]] == [0.1, 0.02]
    assert out["z"] == pytest.approx(sum(r["z"] for r in out["runs"]) / 2**0.5)
