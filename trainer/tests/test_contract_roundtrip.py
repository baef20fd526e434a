"""The contract end to end: a config with a non-default value in every stage field (and model field), resolved by
the real TypeScript resolver, written as the job spec, read by the trainer (job.load_spec): every value the
trainer holds equals the resolved config's, and nothing the config did not say appears (the trainer keeps no
defaults of its own). Then the places where the trainer turns config into behaviour read those same values."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from specs import resolve

from trainflow_trainer.contract import JobSpec
from trainflow_trainer.job import load_spec

# rft and rl micro-batch by packing.max_tokens (no micro_batch_size), and an rl step trains
# batch_groups × group_size = 2 × 3 trajectories; midtrain/sft split 48 over 2 nodes × 4 GPUs, 3 at a time.
TRAIN: dict[str, Any] = {
    "steps": 7,
    "batch_size": 6,
    "lr": 0.002,
    "min_lr": 0.0001,
    "warmup_steps": 2,
    "weight_decay": 0.05,
    "betas": [0.8, 0.9],
    "grad_clip": 0.5,
    "seed": 99,
    # the job has 8 GPU processes, so the FSDP2 policies apply (validate refuses them on one process)
    "fsdp": {"mixed_precision": "bf16", "activation_checkpointing": True, "cpu_offload": True},
}
LM_TRAIN: dict[str, Any] = {**TRAIN, "batch_size": 48, "micro_batch_size": 3}
COMMON: dict[str, Any] = {
    "description": "every field set",
    "checkpoint": {"every": 3, "keep_last": 4},
    "resources": {
        "pool": "gpu",
        "nodes": 2,
        "gpus_per_node": 4,
        "gpu_type": "h100",
        "cpus_per_node": 3,
        "memory_per_node": "2Gi",
    },
    "retry": {"max_attempts": 9, "initial_interval": "7s", "backoff": 3, "max_interval": "9m"},
    "heartbeat_timeout": "3m",
    "start_to_close_timeout": "2d",
    "gates": [{"metric": "loss", "min": 0.0, "max": 5.0}],
    "job": {"command": ["python", "-m", "trainflow_trainer.job"], "env": {"EXTRA": "1"}},
}
ROLLOUT: dict[str, Any] = {
    "group_size": 3,
    "concurrency": 5,
    "batch_groups": 2,
    "max_turns": 2,
    "max_new_tokens": 16,
    "temperature": 0.7,
    "top_p": 0.9,
    "max_staleness": 2,
    "session_idle_timeout": "90s",
    # a fleet of two CPU servers, one of them on train-tagged cores; the backend stays the default (local):
    # vllm would need its environment to resolve nothing more here
    "inference": {"backend": "local", "servers": 2, "colocated": 1},
    "sandbox": {"timeout": "3s"},  # memory and max_processes: refused until they reach the agent's sandbox
}
# fields whose other values need other inputs (vLLM; gold_trajectories: a SWE instances file, sft only;
# test_swe_gold.py covers it)
ONLY_VALUE = ("rollout.inference.backend", "data.sources[0].kind")
SAMPLING: dict[str, Any] = {
    "strategy": "uniform",
    "exploration_bonus": 0.5,
    "filter_all_equal": False,
    "recheck_every": 7,
    "all_equal_tolerance": 0.01,
    "stats_uri": "s3://trainflow/stats/table.json",
}
ALGORITHM: dict[str, Any] = {
    "name": "dapo",
    "clip_low": 0.1,
    "clip_high": 0.3,
    "loss_agg": "token-mean",
    "kl_coef": 0.01,
    "entropy_coef": 0.02,
    "advantage_scaling": "difficulty",
    "normalize_std": False,
    "decoupled": True,
    "behav_weight_cap": 3.5,
    "minibatches": 2,
    "kl_reference": "s3://trainflow/reference/ckpt",
}
PACKING = {"mode": "flat", "max_tokens": 1024}


def stages(root: Path) -> list[dict[str, Any]]:
    data = {"sources": [{"path": str(root / "docs.parquet"), "weight": 2.5, "format": "parquet"}], "seq_len": 128}
    tasks = {"family": "jsonl", "path": str(root / "tasks.jsonl"), "count": 3}  # tasks.seed: family demo only
    rollout_blocks = {"tasks": tasks, "rollout": ROLLOUT, "sampling": SAMPLING, "packing": PACKING, "train": TRAIN}
    return [
        {"name": "mid", "kind": "midtrain", "data": data, "train": LM_TRAIN, **COMMON},
        {"name": "sft", "kind": "sft", "data": data, "packing": PACKING, "train": LM_TRAIN, **COMMON},
        {"name": "rft", "kind": "rft", **rollout_blocks, "rft": {"keep": "top", "top_fraction": 0.5}, **COMMON},
        {"name": "rl", "kind": "rl", **rollout_blocks, "algorithm": ALGORITHM, **COMMON},
    ]


def pipeline(stage_list: list[dict[str, Any]], root: Path) -> dict[str, Any]:
    return {
        "api_version": "trainflow/v1",
        "metadata": {"name": "roundtrip"},
        "storage": {"uri": "s3://trainflow/roundtrip"},
        "pools": {"default": {"launcher": "local"}, "gpu": {"launcher": "slurm", "gpus_per_node": 8, "max_nodes": 4}},
        "model": {
            "init": {"preset": "small", "overrides": {"num_hidden_layers": 3, "rope_theta": 5000.5}},
            "tokenizer": {"path": str(root / "tokenizer.json")},
            "dtype": "fp32",
        },
        "stages": stage_list,
    }


def leaves(value: Any, path: str = "") -> dict[str, Any]:
    """path → leaf value of a JSON tree (lists by index)."""
    if isinstance(value, dict):
        return {k: v for key, item in value.items() for k, v in leaves(item, f"{path}.{key}".lstrip(".")).items()}
    if isinstance(value, list) and value:
        return {k: v for i, item in enumerate(value) for k, v in leaves(item, f"{path}[{i}]").items()}
    return {path: value}


@pytest.fixture(scope="module")
def resolved(tmp_path_factory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("roundtrip")
    return resolve(pipeline(stages(root), root))


def test_the_config_sets_every_stage_field_to_a_non_default_value(resolved):
    """Guards the test itself: each leaf differs from what the schema fills in when the field is left out, so
    a default the trainer kept of its own could not pass unnoticed."""
    root = Path(resolved["model"]["tokenizer"]["path"]).parent
    minimal = [
        {k: v for k, v in st.items() if k in ("name", "kind", "data", "tasks", "rollout", "algorithm")}
        | {"train": {"steps": 7}}
        for st in stages(root)
    ]
    for st in minimal:  # the blocks a kind requires, with nothing set inside
        for block in ("rollout", "algorithm"):
            if block in st:
                st[block] = {}
        if "data" in st:
            st["data"] = {"sources": [{"path": st["data"]["sources"][0]["path"]}]}
        if "tasks" in st:
            st["tasks"] = {"family": st["tasks"]["family"], "path": st["tasks"]["path"]}
    defaults = resolve(pipeline(minimal, root))
    identity = ("name", "kind", "train.steps", "data.sources[0].path", "tasks.family", "tasks.path")
    for got, default in zip(resolved["stages"], defaults["stages"]):
        full, base = leaves(got), leaves(default)
        same = [
            p
            for p, v in base.items()
            if p in full and full[p] == v and not p.startswith(identity) and p not in ONLY_VALUE
        ]
        assert not same, f"stage {got['name']}: these fields hold the schema's default: {same}"
        missing = [p for p, v in base.items() if p not in full and v not in ([], {})]
        assert not missing, f"stage {got['name']}: fields the test config does not cover: {missing}"


@pytest.mark.parametrize("index", range(4))
def test_the_trainer_sees_exactly_the_resolved_values(resolved, index, tmp_path):
    stage = resolved["stages"][index]
    spec = {
        "protocol": 1,
        "pipeline_id": "roundtrip",
        "pipeline_name": resolved["metadata"]["name"],
        "run_id": "r",
        "stage_index": index,
        "attempt": 2,
        "stage": stage,
        "model": resolved["model"],
        "input_checkpoint": None,
        "output_prefix": str(tmp_path / "out"),
        "resume": False,
        "status_uri": str(tmp_path / "out" / "status.json"),
        "storage": {"endpoint": "http://127.0.0.1:9", "region": "eu-west-1", "force_path_style": False},
        "tracking": resolved["tracking"],
        "work_dir": str(tmp_path / "work"),
    }
    path = tmp_path / "spec.json"
    path.write_text(json.dumps(spec))
    parsed = load_spec(str(path))
    assert isinstance(parsed, JobSpec)
    seen = leaves(parsed.model_dump(mode="json", exclude_unset=True))
    sent = leaves(spec)
    differing = {p: (sent[p], seen.get(p)) for p in sent if seen.get(p, object()) != sent[p]}
    assert not differing, f"the trainer holds other values than the resolved config's: {differing}"
    extra = sorted(set(seen) - set(sent))
    assert not extra, f"the trainer holds fields the config did not say: {extra}"
    # the typed values are the JSON's, not a coercion of them (an int stays an int; JSON has one number type,
    # so a float field may arrive as an integer such as 3)
    for p, v in sent.items():
        assert type(seen[p]) is type(v) or (type(v) is int and type(seen[p]) is float), (p, v, seen[p])


def test_where_the_trainer_turns_config_into_behaviour_it_reads_those_values(resolved, tmp_path):
    from trainflow_trainer.contract import StageConfig
    from trainflow_trainer.rl.objective import objective
    from trainflow_trainer.sandbox import Limits
    from trainflow_trainer.stages.rl import packing
    from trainflow_trainer.train import lr_at, micro_batch_size

    sft = StageConfig.model_validate(resolved["stages"][1])
    assert sft.train is not None
    assert micro_batch_size(sft.train, 1) == LM_TRAIN["micro_batch_size"] and micro_batch_size(sft.train, 2) == 3
    rl = StageConfig.model_validate(resolved["stages"][3])
    assert rl.rollout is not None and rl.algorithm is not None
    t = rl.train
    assert t is not None
    assert t.batch_size == ROLLOUT["batch_groups"] * ROLLOUT["group_size"]
    assert lr_at(0, t) == pytest.approx(TRAIN["lr"] / 2)  # warm-up 1 of 2
    assert lr_at(t.steps - 1, t) == pytest.approx(TRAIN["min_lr"])  # the cosine ends at min_lr
    lim = Limits.from_config(rl.rollout.sandbox)
    assert (lim.timeout_s, lim.memory_bytes, lim.max_processes) == (3.0, 512 * 2**20, 32)  # the sandbox's own
    obj = objective(rl)
    lspec = obj.loss
    assert (lspec.eps_low, lspec.eps_high, lspec.kl_coef, lspec.entropy_coef) == (0.1, 0.3, 0.01, 0.02)
    assert (lspec.aggregation, obj.normalize_std, obj.scaling) == ("token_mean", False, "difficulty")
    assert (lspec.decoupled, lspec.behav_weight_cap, obj.minibatches) == (True, 3.5, 2)
    assert (lspec.temperature, lspec.top_p) == (0.7, 0.9)  # the sampler's distribution
    assert (obj.all_equal_tolerance, obj.kl_reference) == (0.01, ALGORITHM["kl_reference"])
    assert packing(rl) == PACKING
    assert rl.rollout.session_idle_timeout == 90_000  # ms; the driver gets seconds (rl/rollouts.py)
