"""The job process: exit codes, SIGTERM → checkpoint + 75, exact resume after a real SIGKILL, one CPU step."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest
import torch
from conftest import make_spec, run_job, start_job, wait_for, write_spec
from safetensors.torch import load_file
from specs import data_sources, train_configs

from trainflow_trainer.train_state import read_train_state


def committed(out: Path) -> list[str]:
    return sorted(p.parent.name for p in out.glob("step-*/COMMIT.json"))


def test_bad_spec_exits_2(tmp_path, demo_dir):
    r = run_job(tmp_path / "missing.json")
    assert r.returncode == 2 and "trainflow: bad input: job spec" in r.stderr and "no such file" in r.stderr
    (tmp_path / "broken.json").write_text("{not json")
    r = run_job(tmp_path / "broken.json")
    assert r.returncode == 2 and "trainflow: bad input: job spec" in r.stderr and "invalid JSON" in r.stderr
    spec = make_spec(demo_dir, str(tmp_path / "out"), tmp_path / "work")
    spec["stage"]["kind"] = "dance"  # a spec the contract refuses: one line naming the field
    r = run_job(write_spec(spec, tmp_path / "kind.json"))
    line = f"trainflow: bad input: job spec {tmp_path / 'kind.json'}: stage.kind: Input should be 'midtrain'"
    assert r.returncode == 2 and r.stderr.strip().splitlines()[-1].startswith(line), r.stderr


def test_unknown_preset_and_missing_data_exit_2(tmp_path, demo_dir, capsys):
    # In-process (job.main) to spare three interpreter start-ups; the exit-code mapping is the same code.
    from conftest import TEST_MODEL_OVERRIDES

    from trainflow_trainer.job import main

    spec = make_spec(demo_dir, str(tmp_path / "out"), tmp_path / "work")
    spec["model"]["init"]["preset"] = "gigantic"  # a spec no resolver writes: the contract refuses it
    assert main(["--spec", str(write_spec(spec, tmp_path / "preset.json"))]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith(f"trainflow: bad input: job spec {tmp_path / 'preset.json'}: model.init.PresetInit.preset:")
    sources = [{"path": str(demo_dir / "midtrain-code.jsonl")}, {"path": str(tmp_path / "nowhere.jsonl")}]
    spec = make_spec(demo_dir, str(tmp_path / "out"), tmp_path / "work", sources=sources)
    assert main(["--spec", str(write_spec(spec, tmp_path / "data.json"))]) == 2
    assert f"trainflow: bad input: data source {tmp_path / 'nowhere.jsonl'}: no such file" in capsys.readouterr().err
    status = json.loads((tmp_path / "out" / "status.json").read_text())
    assert status["state"] == "failed" and status["reason"].startswith("bad input: data source")
    model = {  # a vocabulary smaller than the tokenizer's: wrong shapes
        "init": {"preset": "tiny", "overrides": {**TEST_MODEL_OVERRIDES, "vocab_size": 10}},
        "tokenizer": {"path": str(demo_dir / "tokenizer.json")},
    }
    spec = make_spec(demo_dir, str(tmp_path / "out"), tmp_path / "work", model=model)
    assert main(["--spec", str(write_spec(spec, tmp_path / "vocab.json"))]) == 2
    assert "tokenizer has" in capsys.readouterr().err


def test_sigterm_saves_checkpoint_then_exits_75(tmp_path, demo_dir):
    out = tmp_path / "out"
    spec = make_spec(demo_dir, str(out), tmp_path / "work", steps=400, every=400)  # only the final one
    proc = start_job(write_spec(spec, tmp_path / "spec.json"))
    status_file = out / "status.json"
    wait_for(lambda: status_file.exists() and json.loads(status_file.read_text())["step"] >= 1, 120, "step 1", proc)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 75, err
    steps = committed(out)
    assert len(steps) == 1, steps
    commit = json.loads((out / steps[0] / "COMMIT.json").read_text())
    assert commit["final"] is False and 1 <= commit["step"] < 400
    status = json.loads(status_file.read_text())
    assert status["state"] == "failed" and status["reason"] == "preempted"
    assert status["last_checkpoint"] == str(out / steps[0])


def final_state(out: Path, step: int):
    d = out / f"step-{step:06d}"
    assert json.loads((d / "COMMIT.json").read_text())["final"] is True
    return (
        load_file(d / "model.safetensors"),
        read_train_state(d / "train_state")["optimizer"],
        json.loads((d / "trainer_state.json").read_text()),
    )


def assert_same_optimizer(a, b):
    assert a["param_groups"] == b["param_groups"]
    assert a["state"].keys() == b["state"].keys()
    for k in a["state"]:
        for name, t in a["state"][k].items():
            assert torch.equal(t, b["state"][k][name]), (k, name)


def test_exact_resume_after_sigkill(tmp_path, demo_dir):
    steps = 12
    straight_out, killed_out = tmp_path / "straight", tmp_path / "killed"
    r = run_job(
        write_spec(make_spec(demo_dir, str(straight_out), tmp_path / "w1", steps=steps, every=4), tmp_path / "a.json")
    )
    assert r.returncode == 0, r.stderr

    spec_b = write_spec(
        make_spec(demo_dir, str(killed_out), tmp_path / "w2", steps=steps, every=4), tmp_path / "b.json"
    )
    proc = start_job(spec_b)
    wait_for(lambda: (killed_out / "step-000004" / "COMMIT.json").exists(), 120, "the step-4 commit", proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    assert f"step-{steps:06d}" not in committed(killed_out), "the job finished before the kill: test is void"

    r = run_job(spec_b)
    assert r.returncode == 0, r.stderr
    status = json.loads((killed_out / "status.json").read_text())
    assert status["resumed_from"] == {"uri": str(killed_out / "step-000004"), "step": 4}

    w1, o1, s1 = final_state(straight_out, steps)
    w2, o2, s2 = final_state(killed_out, steps)
    assert w1.keys() == w2.keys()
    for k in w1:
        assert torch.equal(w1[k], w2[k]), k  # bitwise
    assert_same_optimizer(o1, o2)
    assert s1["data"] == s2["data"]  # same data cursor at the end
    assert s1["loss_history"] == s2["loss_history"]  # same batches, same losses, step by step
    assert len(s1["loss_history"]) == steps
    # TensorBoard's own reader sees the killed stage's curve once per step, continued by the resumed attempt
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(killed_out / "tensorboard"))
    acc.Reload()
    loss = acc.Scalars("train/loss")
    assert [e.step for e in loss] == list(range(1, steps + 1))
    assert [e.value for e in loss] == pytest.approx(s1["loss_history"], rel=1e-6)  # stored as float32

    # A finished stage, run again with resume, does nothing and exits 0 (no resume, no new commit).
    r = run_job(spec_b)
    assert r.returncode == 0 and "nothing to do" in r.stderr
    status = json.loads((killed_out / "status.json").read_text())
    assert status["resumed_from"] is None and status["state"] == "done" and status["step"] == steps
    assert status["last_checkpoint"] == str(killed_out / f"step-{steps:06d}")


def test_one_cpu_training_step_learns(demo_dir, tok):
    from conftest import TEST_MODEL_OVERRIDES

    from trainflow_trainer.data import FlatPacker, load_stream
    from trainflow_trainer.model import Transformer, preset
    from trainflow_trainer.storage import Storage
    from trainflow_trainer.train import Dist, build_optimizer, train_step

    torch.manual_seed(0)
    model = Transformer(preset("tiny", vocab_size=tok.vocab_size, **TEST_MODEL_OVERRIDES))
    (cfg,) = train_configs({"steps": 5, "batch_size": 4, "micro_batch_size": 2, "lr": 3e-3})
    opt = build_optimizer(model, cfg)
    stream = load_stream(data_sources({"path": str(demo_dir / "midtrain-code.jsonl")}), Storage(), tok, "midtrain", 0)
    batch = FlatPacker(stream, 64, tok.pad_id).next_batch(4)
    before = model.model.embed_tokens.weight.detach().clone()
    losses = [train_step(model, opt, batch, s, cfg, Dist(), None)["loss"] for s in range(5)]
    assert all(torch.isfinite(torch.tensor(losses)))
    assert abs(losses[0] - torch.log(torch.tensor(float(tok.vocab_size))).item()) < 0.5  # starts near uniform
    assert losses[-1] < losses[0]
    assert not torch.equal(before, model.model.embed_tokens.weight)


def test_micro_batching_does_not_change_the_step(demo_dir, tok):
    """Gradient accumulation is exact: 4 micro-batches of 1 == 1 micro-batch of 4 (up to fp32 summation order)."""
    from conftest import TEST_MODEL_OVERRIDES

    from trainflow_trainer.data import FlatPacker, load_stream
    from trainflow_trainer.model import Transformer, preset
    from trainflow_trainer.storage import Storage
    from trainflow_trainer.train import Dist, build_optimizer, train_step

    stream = load_stream(data_sources({"path": str(demo_dir / "sft.jsonl")}), Storage(), tok, "sft", 0)
    batch = FlatPacker(stream, 256, tok.pad_id).next_batch(4)
    results = []
    cfgs = train_configs(*({"steps": 1, "batch_size": 4, "micro_batch_size": micro} for micro in (4, 1)))
    for cfg in cfgs:
        torch.manual_seed(0)
        model = Transformer(preset("tiny", vocab_size=tok.vocab_size, **TEST_MODEL_OVERRIDES))
        m = train_step(model, build_optimizer(model, cfg), batch, 0, cfg, Dist(), None)
        results.append((m["loss"], model.model.embed_tokens.weight.detach().clone()))
    assert results[0][0] == pytest.approx(results[1][0], rel=1e-6)
    assert torch.allclose(results[0][1], results[1][1], atol=1e-6)


def test_trie_sft_step_equals_flat_step(demo_dir, tok):
    """packing.mode trie (shared prefixes computed once, via trie/) makes the same optimizer step as flat."""
    from conftest import TEST_MODEL_OVERRIDES

    from trainflow_trainer.data import IGNORE, Batch, ExamplePacker, load_stream
    from trainflow_trainer.model import Transformer, preset
    from trainflow_trainer.storage import Storage
    from trainflow_trainer.train import Dist, train_step, train_step_trie

    stream = load_stream(data_sources({"path": str(demo_dir / "sft.jsonl")}), Storage(), tok, "sft", 0)
    trie_batch = ExamplePacker(stream, seq_len=1024).next_batch(4)
    t = max(len(e.ids) for e in trie_batch.examples)
    rows = []
    for e in trie_batch.examples:  # the same conversations, one per row, padded
        n, pad = len(e.ids), t - len(e.ids)
        labels = [e.ids[i + 1] if e.targets[i + 1] else IGNORE for i in range(n - 1)] + [IGNORE] * (pad + 1)
        rows.append((e.ids + [tok.pad_id] * pad, list(range(n)) + list(range(pad)), labels, [0] * n + [1] * pad))
    flat_batch = Batch(*(torch.tensor(c) for c in zip(*rows)))
    assert flat_batch.num_targets() == trie_batch.num_targets() > 0

    results = []
    for step_fn, batch in ((train_step, flat_batch), (train_step_trie, trie_batch)):
        torch.manual_seed(0)
        model = Transformer(preset("tiny", vocab_size=tok.vocab_size, **TEST_MODEL_OVERRIDES))
        (cfg,) = train_configs({"steps": 1, "batch_size": 4, "micro_batch_size": 2, "lr": 1.0, "min_lr": 1.0})
        extra = (512,) if step_fn is train_step_trie else ()
        # SGD with lr 1: the weight change IS the (clipped) gradient. (Adam's first step, g/|g|, would blow
        # rounding-level differences of near-zero gradients up to ±lr.)
        m = step_fn(model, torch.optim.SGD(model.parameters(), lr=1.0), batch, 0, cfg, Dist(), None, *extra)
        results.append((m, {k: v.detach().clone() for k, v in model.state_dict().items()}))
    (mf, wf), (mt, wt) = results
    assert mt["loss"] == pytest.approx(mf["loss"], rel=1e-5)
    assert mt["grad_norm"] == pytest.approx(mf["grad_norm"], rel=1e-4)
    assert mt["unique_tokens"] < mt["tokens"]  # the shared system/tool prompt is computed once
    for k in wf:
        assert torch.allclose(wf[k], wt[k], atol=1e-6, rtol=1e-4), k
