"""The data-parallel path under torchrun (2 processes over gloo, FSDP2 on CPU): the loss curve and weights of
1 process on the same global batch; checkpoints as sharded DCP folders that resume at another world size
(2 → 1 and 1 → 2). kill -9 of one rank, retried by the job activity: test/pipeline/rank-kill.test.ts."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
import torch
from conftest import TRAINER_DIR, job_env, make_spec, run_job, torchrun, write_spec
from safetensors.torch import load_file
from specs import train_configs

from trainflow_trainer.model import Transformer, load_config
from trainflow_trainer.train import build_optimizer
from trainflow_trainer.train_state import load_train_state, read_train_state

STEPS, EVERY = 12, 4


def torchrun_cmd(spec_path: Path, nproc: int = 2) -> list[str]:
    return torchrun(["-m", "trainflow_trainer.job", "--spec", str(spec_path)], nproc)


def run_ranks(spec_path: Path, nproc: int) -> subprocess.CompletedProcess:
    if nproc == 1:
        return run_job(spec_path, timeout=240)
    cmd = torchrun_cmd(spec_path, nproc)
    return subprocess.run(cmd, cwd=TRAINER_DIR, env=job_env(), capture_output=True, text=True, timeout=240)


def spec_for(demo_dir: Path, root: Path, name: str) -> Path:
    spec = make_spec(
        demo_dir, str(root / name), root / f"work-{name}", steps=STEPS, every=EVERY, batch_size=4, micro_batch_size=2
    )
    return write_spec(spec, root / f"{name}.json")


@pytest.fixture(scope="module")
def straight(tmp_path_factory, demo_dir) -> dict[int, Path]:
    """Uninterrupted runs on 1 and on 2 ranks: world size → output folder."""
    root = tmp_path_factory.mktemp("straight")
    outs = {}
    for world in (1, 2):
        r = run_ranks(spec_for(demo_dir, root, f"w{world}"), world)
        assert r.returncode == 0, r.stderr[-3000:]
        outs[world] = root / f"w{world}"
    return outs


def final(out: Path) -> Path:
    d = out / f"step-{STEPS:06d}"
    assert json.loads((d / "COMMIT.json").read_text())["final"] is True
    return d


def trainer_state(d: Path) -> dict:
    return json.loads((d / "trainer_state.json").read_text())


def test_two_gloo_processes_match_one(straight):
    d1, d2 = final(straight[1]), final(straight[2])
    s1, s2 = trainer_state(d1), trainer_state(d2)
    assert s2["world_size"] == 2 and s1["world_size"] == 1
    assert len(s1["loss_history"]) == STEPS
    for a, b in zip(s1["loss_history"], s2["loss_history"]):
        assert abs(a - b) <= 1e-6 * abs(a), (s1["loss_history"], s2["loss_history"])
    assert s1["data"] == s2["data"]
    w1, w2 = load_file(d1 / "model.safetensors"), load_file(d2 / "model.safetensors")
    for k in w1:
        assert torch.allclose(w1[k], w2[k], atol=1e-6, rtol=1e-5), k


def test_checkpoint_is_sharded_per_rank_and_committed(straight):
    """2 ranks: each wrote its own DCP shard file, COMMIT.json lists them and the metadata with their
    checksums, and together they hold exactly the gathered HF weights (bitwise) and an AdamW state per weight."""
    d = final(straight[2])
    files = {e["path"]: e for e in json.loads((d / "COMMIT.json").read_text())["files"]}
    assert {"train_state/.metadata", "train_state/__0_0.distcp", "train_state/__1_0.distcp"} <= files.keys()
    assert "optimizer.pt" not in files
    for rank in (0, 1):  # FSDP2 shards every weight: each rank's file holds about half of the state
        assert files[f"train_state/__{rank}_0.distcp"]["size"] > 0.3 * files["model.safetensors"]["size"]
    state = read_train_state(d / "train_state")
    hf = load_file(d / "model.safetensors")
    for k, v in hf.items():
        assert torch.equal(state["model"][k], v), k
    assert set(state["optimizer"]["state"]) >= set(hf)


@pytest.mark.parametrize(("saved_on", "resumed_on"), [(2, 1), (1, 2)])
def test_resume_at_another_world_size(straight, tmp_path, demo_dir, saved_on, resumed_on):
    """A checkpoint written by N ranks resumes on M (DCP reshards): the resumed run continues the same curve
    (the first resumed step's loss equals the original run's to float rounding) and ends at the same weights."""
    spec = spec_for(demo_dir, tmp_path, "resumed")
    out = tmp_path / "resumed"
    out.mkdir()
    shutil.copytree(straight[saved_on] / f"step-{EVERY:06d}", out / f"step-{EVERY:06d}")
    r = run_ranks(spec, resumed_on)
    assert r.returncode == 0, r.stderr[-3000:]
    status = json.loads((out / "status.json").read_text())
    assert status["resumed_from"] == {"uri": str(out / f"step-{EVERY:06d}"), "step": EVERY}

    ref, got = trainer_state(final(straight[saved_on])), trainer_state(final(out))
    assert got["world_size"] == resumed_on
    assert got["loss_history"][:EVERY] == ref["loss_history"][:EVERY]  # restored, not recomputed
    for a, b in zip(ref["loss_history"][EVERY:], got["loss_history"][EVERY:]):
        assert abs(a - b) <= 1e-6 * abs(a), (ref["loss_history"], got["loss_history"])
    assert got["data"] == ref["data"]
    w_ref = load_file(final(straight[saved_on]) / "model.safetensors")
    w_got = load_file(final(out) / "model.safetensors")
    for k in w_ref:
        assert torch.allclose(w_ref[k], w_got[k], atol=1e-6, rtol=1e-5), k


def test_two_rank_state_loads_exactly_into_one_process(straight):
    """Resharding 2 → 1 is exact: one process loading the 2-rank DCP folder holds bitwise the saved weights
    and AdamW moments."""
    d = final(straight[2])
    torch.manual_seed(123)  # other initial weights: everything must come from the checkpoint
    model = Transformer(load_config(d))
    (cfg,) = train_configs({"steps": STEPS, "batch_size": 4, "micro_batch_size": 2, "lr": 3e-3})
    optimizer = build_optimizer(model, cfg)
    load_train_state(model, optimizer, d / "train_state", distributed=False)
    saved = read_train_state(d / "train_state")
    for k, v in model.state_dict().items():
        assert torch.equal(v, saved["model"][k]), k
    names = {id(p): n for n, p in model.named_parameters()}
    for group in optimizer.param_groups:
        for p in group["params"]:
            for key, t in optimizer.state[p].items():
                assert torch.equal(t, saved["optimizer"]["state"][names[id(p)]][key]), (names[id(p)], key)


def test_sft_with_trie_packing_on_two_ranks_matches_one(tmp_path, demo_dir):
    """The trie step under FSDP2 through the job runner: 2 ranks give 1 process's loss curve and weights."""
    steps = 4
    outs = {}
    for world in (1, 2):
        out = tmp_path / f"w{world}"
        spec = make_spec(
            demo_dir,
            str(out),
            tmp_path / f"work{world}",
            kind="sft",
            steps=steps,
            every=steps,
            packing={"mode": "trie", "max_tokens": 256},
        )
        r = run_ranks(write_spec(spec, tmp_path / f"w{world}.json"), world)
        assert r.returncode == 0, r.stderr[-3000:]
        outs[world] = out / f"step-{steps:06d}"
    s1, s2 = trainer_state(outs[1]), trainer_state(outs[2])
    assert s2["world_size"] == 2 and len(s1["loss_history"]) == steps
    for a, b in zip(s1["loss_history"], s2["loss_history"]):
        assert abs(a - b) <= 1e-6 * abs(a), (s1["loss_history"], s2["loss_history"])
    w1, w2 = load_file(outs[1] / "model.safetensors"), load_file(outs[2] / "model.safetensors")
    for k in w1:
        assert torch.allclose(w1[k], w2[k], atol=1e-6, rtol=1e-5), k
