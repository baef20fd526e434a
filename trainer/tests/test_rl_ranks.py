"""RL and RFT on several ranks train what one process trains.

Two gloo ranks under torchrun (tests/ranks_worker.py) and one process run the same cases: a few RL updates
(PPO-clip, decoupled with two minibatches, KL to a reference and entropy; seq-mean and flat packing) and RFT
steps on fixed synthetic GRPO-shaped batches. Each rank trains the packed micro-batches trie/distribute.py
deals it, the gradients are summed over ranks. Every step's loss and every parameter's gradient after the
steps match the one-process run: relative error ≤ 1e-10 in float64, ≤ 1e-5 in float32 (the final weights too, to
1e-10 in float64; in float32 to 1e-3, Adam's steps amplifying rounding in near-zero gradients). The
batches pack into uneven shares (e.g. two micro-batches on rank 0, one on rank 1) or into one (rank 1 has
none and runs an empty pass): uneven counts finish, and still match.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch
from conftest import TRAINER_DIR, job_env, torchrun
from ranks_worker import CASES, CFG, STEPS, batch, run_case
from specs import job_spec
from test_distributed import torchrun_cmd
from test_rl import alive, descendants, rl_model, rl_stage

from trainflow_trainer.model import Transformer
from trainflow_trainer.rl.ledger_check import read_ledger
from trainflow_trainer.rl.objective import split_minibatches
from trainflow_trainer.trie import build_forest
from trainflow_trainer.trie.distribute import assign_to_ranks, pack_for_ranks
from trainflow_trainer.trie.packer import loss_entries, pack


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory: pytest.TempPathFactory) -> dict:
    out = tmp_path_factory.mktemp("ranks") / "two.pt"
    cmd = torchrun(["tests/ranks_worker.py", str(out)])
    env = {**job_env(), "PYTHONPATH": f"{TRAINER_DIR}:{TRAINER_DIR / 'tests'}"}
    r = subprocess.run(cmd, cwd=TRAINER_DIR, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-4000:]
    saved = torch.load(out, weights_only=False)
    assert saved["world"] == 2 and saved["fsdp"]  # several ranks are FSDP2 ranks (train.py parallelize)
    return saved["results"]


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-30))


def shares_of(case) -> list[tuple[int, int, int]]:
    """Per (mini)batch: micro-batches at the configured budget, and the two ranks' counts after
    trie/distribute.py pack_for_ranks re-packed what would have left a rank idle."""
    out = []
    for step in range(STEPS + 1):
        for chunk in split_minibatches(batch(step, case.kind), case.minibatches if step < STEPS else 1):
            forest = build_forest(chunk, share_prefixes=case.mode == "trie")
            a, b = (len(ix) for ix in assign_to_ranks(pack_for_ranks(forest, case.max_tokens, 2), 2))
            out.append((len(pack(forest, case.max_tokens, entries=loss_entries(forest))), a, b))
    return out


def test_the_cases_cover_re_split_batches_and_uneven_shares() -> None:
    shares = {name: shares_of(case) for name, case in CASES.items()}
    # one micro-batch at 4096 tokens: cut so that both ranks train
    assert any(n == 1 and a and b for name in shares if "one-micro-batch" in name for n, a, b in shares[name])
    # and uneven counts still happen (a rank runs padded empty passes): they must not hang, and still match
    assert any(a != b for s in shares.values() for _, a, b in s), shares


@pytest.mark.parametrize("name", list(CASES))
def test_two_ranks_match_one_process(two_ranks: dict, name: str) -> None:
    case = CASES[name]
    tol = 1e-10 if case.dtype == torch.float64 else 1e-5
    one, two = run_case(case, None), two_ranks[name]
    for a, b in zip(two["losses"], one["losses"]):
        assert abs(a - b) <= tol * abs(b), (name, two["losses"], one["losses"])
    assert len(set(one["losses"])) == len(one["losses"])  # the steps trained different batches
    assert one["grads"].keys() == two["grads"].keys() == one["weights"].keys()
    for k, g in one["grads"].items():
        assert float(g.abs().max()) > 0, k  # every parameter was trained
        assert rel_err(two["grads"][k], g) <= tol, (name, k, rel_err(two["grads"][k], g))
        # Adam divides by the gradient's RMS, so in float32 a rounding difference in a near-zero gradient is a
        # visible step of a near-zero bias; in float64 the weights agree as closely as the gradients
        assert rel_err(two["weights"][k], one["weights"][k]) <= (tol if case.dtype == torch.float64 else 1e-3), k
    # and the steps moved the weights (the comparison is not of untouched initial weights)
    torch.manual_seed(0)
    init = Transformer(CFG).to(case.dtype).state_dict()
    assert any(rel_err(one["weights"][k], init[k].double()) > 1e-4 for k in one["weights"])


# --------------------------------------------------------------------------- the stages, end to end


def rank_pid(parent: int, rank: int) -> int | None:
    """The pid of a torchrun worker by its RANK (every worker runs the same command line)."""
    for pid in descendants(parent):
        try:
            env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        if b"trainflow_trainer.job" in cmdline and f"RANK={rank}".encode() in env:
            return pid
    return None


def test_rft_then_rl_on_two_ranks_kill9_of_the_coordinator_trains_every_group_exactly_once(tmp_path, tokenizer):
    """RFT, then RL, each as 2 trainer ranks under torchrun; the RL job's coordinator rank (the one that talks to
    the data plane) is SIGKILLed once step 2 is committed; torchrun takes the other rank down, the rollout side
    dies with its parent, and the resumed 2-rank job finishes with every group trained once, counted."""
    env = job_env()
    rft_stage = {
        "name": "rft",
        "kind": "rft",
        "tasks": {"family": "demo", "count": 4},
        "rollout": {"group_size": 2, "concurrency": 4, "max_turns": 1, "max_new_tokens": 8},
        "rft": {"keep": "top", "top_fraction": 0.5},
        "packing": {"mode": "trie", "max_tokens": 16},  # several micro-batches: both ranks train
        "train": {"steps": 2, "batch_size": 4},
    }
    rft_out = tmp_path / "out" / "rft"
    rft = job_spec(rft_stage, rl_model(tokenizer), str(rft_out), tmp_path / "work-rft", stage_index=3)
    (tmp_path / "rft.json").write_text(json.dumps(rft))
    r = subprocess.run(
        torchrun_cmd(tmp_path / "rft.json"), cwd=TRAINER_DIR, env=env, capture_output=True, text=True, timeout=240
    )
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stderr.count("rft rollouts: 8 episodes") == 1  # one coordinator ran them
    rft_state = json.loads((rft_out / "step-000002" / "trainer_state.json").read_text())
    kept = json.loads((rft_out / "step-000002" / "kept.json").read_text())
    assert rft_state["world_size"] == 2 and rft_state["metrics"]["kept"] == len(kept)

    out, work = tmp_path / "out" / "rl", tmp_path / "work"
    spec = job_spec(rl_stage(steps=5), rl_model(tokenizer), str(out), work, stage_index=4)
    spec_file = tmp_path / "spec.json"
    spec_file.write_text(json.dumps(spec))

    # attempt 1: SIGKILL rank 0 once step 2 is committed (step 4 may be committed too by the time it lands)
    job = subprocess.Popen(
        torchrun_cmd(spec_file), cwd=TRAINER_DIR, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    assert job.stdout is not None
    children: set[int] = set()
    deadline = time.monotonic() + 200
    step = 0
    for line in job.stdout:
        children |= descendants(job.pid)
        if line.startswith("TRAINFLOW_STATUS"):
            step = json.loads(line.split(" ", 1)[1])["step"]
        if (out / "step-000002" / "COMMIT.json").exists() and step >= 2:
            break
        assert time.monotonic() < deadline, "attempt 1 did not reach a committed step 2"
    coordinator = rank_pid(job.pid, 0)
    assert coordinator is not None and rank_pid(job.pid, 1) is not None, "expected two trainer ranks"
    assert len(children) >= 5, f"expected 2 ranks, server, data plane and agent worker, saw {children}"
    os.kill(coordinator, signal.SIGKILL)
    assert job.wait(timeout=120) != 0  # torchrun saw a rank die and stopped the other
    job.stdout.close()
    t_end = time.monotonic() + 30
    while any(alive(p) for p in children) and time.monotonic() < t_end:
        time.sleep(0.2)
    assert not [p for p in children if alive(p)], "processes outlived the killed job"
    assert not (out / "step-000005" / "COMMIT.json").exists(), "attempt 1 finished before the kill landed"
    k = max(s for s in (2, 4) if (out / f"step-{s:06d}" / "COMMIT.json").exists())
    ckpt = json.loads((out / f"step-{k:06d}" / "trainer_state.json").read_text())
    assert ckpt["world_size"] == 2

    # attempt 2: 2 ranks again, resumes from step k and finishes
    r = subprocess.run(torchrun_cmd(spec_file), cwd=TRAINER_DIR, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    statuses = [json.loads(ln.split(" ", 1)[1]) for ln in r.stdout.splitlines() if ln.startswith("TRAINFLOW_STATUS")]
    assert statuses[-1]["resumed_from"] == {"uri": str(out / f"step-{k:06d}"), "step": k}
    assert r.stderr.count("data plane on ") == 1  # the coordinator alone started the rollout side
    final = json.loads((out / "step-000005" / "trainer_state.json").read_text())
    assert json.loads((out / "step-000005" / "COMMIT.json").read_text())["final"] is True
    assert final["world_size"] == 2
    stats = json.loads((out / "step-000005" / "sampler_stats.json").read_text())
    assert stats["id"] == json.loads((tmp_path / "out" / "sampling" / "stats.json").read_text())["id"]

    # counted: every group the ledger holds up to the final cursor was trained exactly once, or dropped as stale
    hist = final["history"]
    assert [h["step"] for h in hist] == [1, 2, 3, 4, 5]
    assert hist[:k] == ckpt["history"]
    trained = [g for h in hist for g in h["groups"]]
    dropped = [g for h in hist for g in h["dropped"]]
    assert len(trained) == len(set(trained)) == 5 * 2 - len(dropped)
    entries = read_ledger(work / "ledger")
    upto = [
        e["record"]["group_id"] for e in entries if e["seq"] <= final["cursor"] and e["record"].get("kind") == "group"
    ]
    assert sorted(upto) == sorted(trained + dropped)
    for i, h in enumerate(hist):  # a step trains only groups after the previous step's cursor
        assert h["cursor"] > (hist[i - 1]["cursor"] if i else -1)
