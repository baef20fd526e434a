"""The RL objective is what the config says, under every setting.

- Temperature and top-p: the CPU engine's recorded log-probs and the trainer's recomputed ones are the same
  distribution, so on-policy importance ratios are 1 for every token (and they are not at temperature 1).
- Presets: `grpo` and `dapo` resolve (through the zod schema itself) to the documented losses, which differ
  on one batch; every `algorithm` field changes the update (or the schema rejects it: test/config).
- An independent reference implementation (below, sharing nothing with trie/losses.py or trie/step.py: its
  own padded forward, its own temperature/top-p log-softmax, its own clipped objective and aggregation)
  matches the trainer for coupled and decoupled PPO, token-mean and seq-mean, with KL, on flat and
  trie-packed batches split into several micro-batches, in float64 to 1e-10.
- Kill -9 mid-RL with kl_coef > 0: the resumed attempt's KL reference is the original one (same weights
  hash) and its KL curve does not fall back to zero; temperature and top_p ≠ 1 run end to end with
  on-policy ratios of 1 in the first step.
"""

from __future__ import annotations

import copy
import functools
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from specs import job_spec, rollout_stage, stage_configs
from test_rl import descendants, kill9_and_reap, rl_model, rl_stage

from trainflow_trainer.contract import AlgorithmConfig, StageConfig
from trainflow_trainer.model import ModelConfig, Transformer
from trainflow_trainer.rl.batch import group_advantages, to_trajectories
from trainflow_trainer.rl.objective import objective, update, with_logprobs
from trainflow_trainer.rl.reference import weights_hash
from trainflow_trainer.serve.engine import Engine, SamplingParams
from trainflow_trainer.serve.runner import TransformerRunner
from trainflow_trainer.trie import LossSpec, Trajectory, packed_forward_backward
from trainflow_trainer.trie.builder import Floats
from trainflow_trainer.trie.step import packed_logprobs

TRAINER = Path(__file__).resolve().parents[1]
REPO = TRAINER.parent
VOCAB = 11
CFG = ModelConfig(
    vocab_size=VOCAB,
    hidden_size=32,
    intermediate_size=48,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=256,
)


def make_model(dtype: torch.dtype = torch.float32, seed: int = 0) -> Transformer:
    torch.manual_seed(seed)
    return Transformer(CFG).to(dtype)


# --------------------------------------------------------------------------- temperature and top-p


def sample_on_policy(model: Transformer, temperature: float, top_p: float, n: int = 6) -> list[Trajectory]:
    """Generations from the CPU engine: prompt + sampled tokens, with the recorded log-probs and versions."""
    engine = Engine(TransformerRunner(model), version=0, eos_token_ids=())
    out = []
    for i in range(n):
        prompt = [1 + i % 5, 2, 3 + i % 3]
        params = SamplingParams(max_tokens=12, temperature=temperature, top_p=top_p, seed=100 + i)
        toks = list(engine.generate(prompt, params))
        ids = prompt + [t.id for t in toks]
        out.append(
            Trajectory(
                tokens=ids,
                loss_mask=[0.0] * len(prompt) + [1.0] * len(toks),
                logprobs=[0.0] * len(prompt) + [t.logprob for t in toks],
                versions=[0] * len(ids),
                advantage=1.0,
            )
        )
    return out


def token_values(xs: Floats | None) -> np.ndarray:
    """A per-token field of a trajectory these tests built (optional on Trajectory), as float64."""
    assert xs is not None
    return np.asarray(xs, dtype=np.float64)


def grad(p: torch.Tensor) -> torch.Tensor:
    assert p.grad is not None, "every parameter gets a gradient here"
    return p.grad


@pytest.mark.parametrize(("temperature", "top_p"), [(1.3, 0.8), (0.7, 0.95), (1.0, 0.5), (1.2, 1.0)])
def test_on_policy_ratios_are_one_for_every_token_at_any_temperature_and_top_p(temperature, top_p):
    model = make_model()
    trajs = sample_on_policy(model, temperature, top_p)
    n_gen = sum(int(token_values(t.loss_mask).sum()) for t in trajs)
    assert n_gen == 6 * 12
    recomputed = packed_logprobs(model, trajs, 64, temperature=temperature, top_p=top_p)
    for t, lp in zip(trajs, recomputed):
        gen = token_values(t.loss_mask)[1:] > 0
        ratio = np.exp(lp.double().numpy()[gen] - token_values(t.logprobs)[1:][gen])
        np.testing.assert_allclose(ratio, 1.0, rtol=0, atol=2e-5)
    # the same through the loss: no clipping, ratio mean and max 1
    spec = LossSpec(kind="ppo", eps_low=0.2, eps_high=0.28, temperature=temperature, top_p=top_p)
    m = packed_forward_backward(model, trajs, spec, 40, backward=False)  # several micro-batches
    assert m["clip_frac"] == 0.0
    assert abs(m["ratio_mean"] - 1.0) < 2e-5 and abs(m["ratio_max"] - 1.0) < 2e-5
    # what the trainer did before: temperature-1, untruncated log-probs give ratios far from 1
    wrong = packed_forward_backward(model, trajs, LossSpec(kind="ppo", eps_high=0.28), 40, backward=False)
    assert abs(wrong["ratio_max"] - 1.0) > 0.02


def test_engine_samples_only_from_the_nucleus_and_records_its_renormalised_log_prob():
    from trainflow_trainer.serve.engine import sample
    from trainflow_trainer.trie.losses import nucleus

    logits = torch.tensor([3.0, 2.5, 1.0, 0.0, -1.0, -3.0])
    params = SamplingParams(temperature=0.9, top_p=0.7)
    keep = nucleus(logits / 0.9, 0.7)
    p = torch.softmax(logits / 0.9, -1)
    assert keep.tolist() == [True, True, False, False, False, False]  # 0.59 < 0.7, then 0.59 + 0.34 ≥ 0.7
    seen = set()
    for s in range(200):
        tok, lp = sample(logits, params, torch.Generator().manual_seed(s))
        seen.add(tok)
        assert lp == pytest.approx(float(torch.log(p[tok] / p[keep].sum())), abs=1e-6)
    assert seen == {0, 1}


# ------------------------------------------------------------------------------------------- presets


def resolve_algorithm(block: dict[str, Any]) -> dict[str, Any]:
    """The resolved `algorithm` block, from the zod schema itself (src/config/algorithm.ts)."""
    code = (
        "require('tsx/cjs'); const {algorithmSchema} = require(process.argv[1]);"
        "process.stdout.write(JSON.stringify(algorithmSchema.parse(JSON.parse(process.argv[2]))))"
    )
    r = subprocess.run(
        ["node", "-e", code, str(REPO / "src" / "config" / "algorithm.ts"), json.dumps(block)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return json.loads(r.stdout)


@functools.cache
def rl_template() -> StageConfig:
    """A resolved rl stage (one resolver run), whose algorithm and sampling temperature the tests swap."""
    (st,) = stage_configs(rollout_stage())
    return st


def stage_with(algorithm: dict[str, Any], temperature: float = 1.0, top_p: float = 1.0) -> StageConfig:
    """The template stage with a resolved `algorithm` block and the sampler's temperature and top-p."""
    t = rl_template()
    assert t.rollout is not None
    rollout = t.rollout.model_copy(update={"temperature": temperature, "top_p": top_p})
    return t.model_copy(update={"algorithm": AlgorithmConfig.model_validate(algorithm), "rollout": rollout})


def node(tokens: list[int], lps: list[float | None], children: tuple = ()) -> dict[str, Any]:
    return {
        "tokens": tokens,
        "logprobs": lps,
        "versions": [None if lp is None else 0 for lp in lps],
        "children": list(children),
    }


def preset_groups(model: Transformer, seed: int = 3) -> list[dict[str, Any]]:
    """Two groups of four sessions with different lengths (so seq-mean ≠ token-mean) and rewards; behaviour
    log-probs are the model's perturbed (so the clip acts on some tokens)."""
    rng = np.random.default_rng(seed)
    groups = []
    for g, rewards in enumerate(([1.0, 0.0, 0.0, 0.5], [0.2, 1.0, 1.0, 0.0])):
        trajectories = []
        for i, r in enumerate(rewards):
            prompt = [1 + g, 2, 3]
            gen = rng.integers(0, VOCAB, 2 + 3 * i + g).tolist()
            with torch.no_grad():
                lp = packed_logprobs(model, [Trajectory(prompt + gen)], 64)[0].double().numpy()
            behav = (lp[len(prompt) - 1 :] + rng.normal(0, 0.5, len(gen))).tolist()
            tree = node(prompt, [None] * len(prompt), (node(gen, behav),))
            trajectories.append({"reward": r, "tree": tree})
        groups.append({"group_id": f"g{g}", "trajectories": trajectories})
    return groups


def updated_weights(alg: dict[str, Any], ref_shift: float = 0.3) -> torch.Tensor:
    """The parameters after one update on the preset batch under the resolved algorithm `alg`."""
    torch.manual_seed(0)
    model = make_model(torch.float64)
    obj = objective(stage_with(alg))
    trajs, _ = to_trajectories(preset_groups(model), 0, obj.normalize_std, scaling=obj.scaling)
    if obj.loss.kl_coef > 0:
        ref = make_model(torch.float64, seed=1)  # another policy, so the KL term is not zero
        with torch.no_grad():
            for p, q in zip(ref.parameters(), model.parameters()):
                p.copy_(q + ref_shift * (p - q))
        with_logprobs(ref, trajs, obj.loss, 64, "ref_logprobs")
    if obj.loss.decoupled:  # a proximal policy between behaviour and current: weights ≠ 1, some above 1.5
        for t in trajs:
            t.prox_logprobs = [lp + 0.8 * (i % 2) - 0.3 for i, lp in enumerate(token_values(t.logprobs).tolist())]
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    update(model, opt, trajs, obj, {"mode": "trie", "max_tokens": 32}, 0.5, 0.0)  # SGD at 0.5, no clip
    return torch.cat([p.detach().flatten() for p in model.parameters()])


def test_grpo_and_dapo_presets_resolve_to_their_documented_losses_and_differ_on_one_batch():
    grpo, dapo = resolve_algorithm({"name": "grpo"}), resolve_algorithm({"name": "dapo"})
    g, d = objective(stage_with(grpo)).loss, objective(stage_with(dapo)).loss
    assert (g.aggregation, g.eps_low, g.eps_high, g.kl_coef) == ("seq_mean", 0.2, 0.2, 0.0)
    assert (d.aggregation, d.eps_low, d.eps_high, d.kl_coef) == ("token_mean", 0.2, 0.28, 0.0)
    model = make_model(torch.float64)
    trajs, _ = to_trajectories(preset_groups(model), 0)
    lg = packed_forward_backward(model, trajs, g, 64, backward=False)
    ld = packed_forward_backward(model, trajs, d, 64, backward=False)
    assert lg["clip_frac_high"] > 0  # a token above 1.2 with A > 0: only grpo clips it, dapo lets it to 1.28
    assert abs(lg["loss"] - ld["loss"]) > 1e-3
    # each equals the reference implementation's documented formula
    for spec, m in ((g, lg), (d, ld)):
        ref_loss, _ = reference_loss(model, trajs, spec)
        assert m["loss"] == pytest.approx(float(ref_loss.detach()), abs=1e-10)
    # an explicit field overrides the preset
    assert resolve_algorithm({"name": "grpo", "loss_agg": "token-mean"})["loss_agg"] == "token-mean"
    decoupled = resolve_algorithm({"name": "decoupled-ppo"})
    assert (decoupled["decoupled"], decoupled["behav_weight_cap"], decoupled["minibatches"]) == (True, 5, 4)


FIELD_CHANGES: dict[str, dict[str, Any]] = {
    "clip_low": {"clip_low": 0.05},
    "clip_high": {"clip_high": 0.05},
    "loss_agg": {"loss_agg": "seq-mean"},
    "kl_coef": {"kl_coef": 0.5},
    "entropy_coef": {"entropy_coef": 0.1},
    "normalize_std": {"normalize_std": False},
    "advantage_scaling": {"advantage_scaling": "difficulty"},
    "decoupled": {"decoupled": True},
    "behav_weight_cap": {"decoupled": True, "behav_weight_cap": 1.5},  # vs decoupled without a cap
    "minibatches": {"minibatches": 3},
    "name": {"name": "grpo"},
}


@pytest.mark.parametrize("field", sorted(FIELD_CHANGES))
def test_every_algorithm_field_changes_the_update(field):
    base_block = {"name": "dapo", "decoupled": True} if field == "behav_weight_cap" else {"name": "dapo"}
    base = updated_weights(resolve_algorithm(base_block))
    changed = updated_weights(resolve_algorithm({"name": "dapo", **FIELD_CHANGES[field]}))
    assert float((base - changed).abs().max()) > 1e-9, f"algorithm.{field} changed nothing"


def test_kl_reference_changes_the_update_and_every_field_of_the_schema_is_covered():
    alg = resolve_algorithm({"name": "dapo", "kl_coef": 0.5})
    assert updated_weights(alg, ref_shift=0.3).sub(updated_weights(alg, ref_shift=0.9)).abs().max() > 1e-9
    fields = set(resolve_algorithm({"name": "dapo", "kl_coef": 0.1, "kl_reference": "/x"}))
    assert fields == set(FIELD_CHANGES) | {"kl_reference"}


def test_near_equal_rewards_give_zero_advantages_within_the_tolerance():
    assert group_advantages([1.0, 1.0, 1.0, 1.0 + 1e-7], tolerance=1e-6) == [0.0] * 4
    noisy = group_advantages([1.0, 1.0, 1.0, 1.0 + 1e-7], tolerance=0.0)
    assert max(abs(a) for a in noisy) > 0.05  # what the filter tolerance prevents: advantages from noise
    assert group_advantages([1.0, 0.0], tolerance=1e-6) == pytest.approx([1.0, -1.0], abs=1e-5)


# ------------------------------------------------------------------- independent reference implementation


def reference_logprobs(model: Transformer, tokens: list[int], temperature: float, top_p: float) -> torch.Tensor:
    """log p(token t | tokens < t), t ≥ 1, of the sampler's distribution, written out plainly: one padded-free
    causal forward of this sequence alone, scale, sort, cut the nucleus, renormalise; a target outside the
    nucleus joins it (the trainer's documented convention)."""
    logits = model(torch.tensor([tokens]))[0][:-1] / temperature  # [T-1, V]
    rows = []
    for t in range(len(tokens) - 1):
        z = logits[t]
        target = tokens[t + 1]
        p = torch.exp(z - torch.logsumexp(z, 0)).detach()
        order = sorted(range(len(p)), key=lambda j: -float(p[j]))
        kept, mass = [], 0.0
        for j in order:
            if mass >= top_p:
                break
            kept.append(j)
            mass += float(p[j])
        if target not in kept:
            kept.append(target)
        rows.append(z[target] - torch.logsumexp(z[kept], 0))
    return torch.stack(rows)


def reference_loss(model: Transformer, trajs: list[Trajectory], spec: LossSpec) -> tuple[torch.Tensor, torch.Tensor]:
    """(loss, mask-weighted mean ratio π_θ/μ): PPO-clip, coupled or decoupled, k3 KL, token-mean or seq-mean."""
    sums, counts = [], []
    for t in trajs:
        lp = reference_logprobs(model, list(t.tokens), spec.temperature, spec.top_p)
        mask = torch.tensor(token_values(t.loss_mask)[1:], dtype=lp.dtype)
        behav = torch.tensor(token_values(t.logprobs)[1:], dtype=lp.dtype)
        terms = []
        for i in range(len(lp)):
            a = t.advantage
            if spec.decoupled:
                prox = torch.tensor(t.prox_logprobs[i + 1], dtype=lp.dtype) if t.prox_logprobs else lp[i].detach()
                r = torch.exp(lp[i] - prox)
                w = torch.exp(prox - behav[i])
                if spec.behav_weight_cap is not None:
                    w = torch.clamp(w, max=spec.behav_weight_cap)
            else:
                r, w = torch.exp(lp[i] - behav[i]), torch.tensor(1.0, dtype=lp.dtype)
            lo, hi = 1 - spec.eps_low, 1 + spec.eps_high
            surrogate = torch.minimum(r * a, torch.clamp(r, lo, hi) * a)
            term = -w * surrogate
            if spec.kl_coef:
                d = torch.tensor(token_values(t.ref_logprobs)[i + 1], dtype=lp.dtype) - lp[i]
                term = term + spec.kl_coef * (torch.exp(d) - d - 1)
            terms.append(term)
        per_token = torch.stack(terms) * mask * t.weight
        sums.append(per_token.sum())
        counts.append(mask.sum())
    if spec.aggregation == "token_mean":
        loss = torch.stack(sums).sum() / torch.stack(counts).sum()
    else:
        loss = torch.stack([s / c for s, c in zip(sums, counts) if c > 0]).mean()
    return loss, loss


def exactness_batch(model: Transformer, rng: np.random.Generator, prox: bool) -> list[Trajectory]:
    """Branches sharing prompts and earlier turns (a trie with forks), fractional masks, both-sign advantages,
    behaviour, proximal and reference log-probs around the model's (the clip acts on both sides)."""
    seqs = []
    for g in range(2):
        prompt = [1 + g, 2, 3, 4]
        for _ in range(3):
            turn1 = prompt + rng.integers(0, VOCAB, 3).tolist()
            seqs.append(turn1 + rng.integers(0, VOCAB, int(rng.integers(1, 5))).tolist())
            seqs.append(turn1 + [5, 6] + rng.integers(0, VOCAB, int(rng.integers(1, 4))).tolist())
    out = []
    for s in seqs:
        with torch.no_grad():
            lp = reference_logprobs(model, s, 1.0, 1.0).numpy()
        n = len(s)
        mask = np.r_[np.zeros(4), rng.choice([1.0, 1.0, 0.5, 0.0], n - 4)]
        out.append(
            Trajectory(
                tokens=s,
                loss_mask=mask,
                logprobs=np.r_[0.0, lp + rng.normal(0, 0.4, n - 1)].tolist(),
                ref_logprobs=np.r_[0.0, lp + rng.normal(0, 0.2, n - 1)].tolist(),
                prox_logprobs=np.r_[0.0, lp + rng.normal(0, 0.2, n - 1)].tolist() if prox else None,
                advantage=float(rng.normal()),
                weight=float(rng.choice([1.0, 0.5])),
            )
        )
    return out


CASES = [
    ("coupled", "token_mean", 1.0, 1.0, None),
    ("coupled", "seq_mean", 1.3, 0.85, None),
    ("decoupled", "token_mean", 0.8, 0.9, 2.0),
    ("decoupled", "seq_mean", 1.0, 1.0, None),
    ("decoupled-no-prox", "token_mean", 1.1, 0.95, 1.5),
]


@pytest.mark.parametrize(("mode", "agg", "temperature", "top_p", "cap"), CASES)
@pytest.mark.parametrize("share", [True, False], ids=["trie", "flat"])
def test_trainer_matches_an_independent_reference_in_float64(mode, agg, temperature, top_p, cap, share):
    model = make_model(torch.float64, seed=2)
    trajs = exactness_batch(model, np.random.default_rng(7), prox=mode == "decoupled")
    spec = LossSpec(
        kind="ppo",
        aggregation=agg,
        eps_low=0.2,
        eps_high=0.28,
        kl_coef=0.1,
        temperature=temperature,
        top_p=top_p,
        decoupled=mode != "coupled",
        behav_weight_cap=cap,
    )
    model.zero_grad()
    ref_loss, _ = reference_loss(model, trajs, spec)
    ref_loss.backward()
    ref_grads = [grad(p).clone() for p in model.parameters()]
    model.zero_grad()
    m = packed_forward_backward(model, trajs, spec, 24, share_prefixes=share)
    assert m["micro_batches"] > 1
    if mode == "coupled":
        assert 0 < m["clip_frac"] < 1  # the clip is active on some tokens, not all
    assert m["loss"] == pytest.approx(float(ref_loss), abs=1e-10)
    for p, g in zip(model.parameters(), ref_grads):
        assert float((grad(p) - g).abs().max()) <= 1e-10


# --------------------------------------------------------------------------------------- kill -9 with KL


def rl_spec(tmp_path: Path, tok: Path) -> dict[str, Any]:
    # on-policy (max_staleness 0): every trained token's ratio is 1 before the update; the entropy bonus moves
    # the policy every step, even when a batch's rewards are all equal
    stage = rl_stage(steps=6, max_staleness=0, temperature=1.25, top_p=0.9)
    stage["algorithm"] = {"name": "dapo", "kl_coef": 0.5, "entropy_coef": 0.05}
    stage["train"] = {"steps": 6, "lr": 3e-3}
    return job_spec(stage, rl_model(tok), str(tmp_path / "out" / "rl"), tmp_path / "work")


def test_kill9_mid_rl_keeps_the_kl_reference_and_the_kl_curve(tmp_path, tokenizer):
    out = tmp_path / "out" / "rl"
    spec_file = tmp_path / "spec.json"
    spec_file.write_text(json.dumps(rl_spec(tmp_path, tokenizer)))
    cmd = [sys.executable, "-m", "trainflow_trainer.job", "--spec", str(spec_file)]
    job = subprocess.Popen(cmd, cwd=TRAINER, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    children: set[int] = set()
    deadline = time.monotonic() + 200
    for _line in job.stdout or []:
        children |= descendants(job.pid)
        if (out / "step-000002" / "COMMIT.json").exists():
            break
        assert time.monotonic() < deadline, "attempt 1 did not reach a committed step 2"
    kill9_and_reap(job, children)
    assert not (out / "step-000006" / "COMMIT.json").exists(), "attempt 1 finished before the kill landed"
    k = max(s for s in (2, 4) if (out / f"step-{s:06d}" / "COMMIT.json").exists())
    before = json.loads((out / f"step-{k:06d}" / "trainer_state.json").read_text())
    ref1 = before["kl_reference"]
    # the stage starts from model.init: its reference is the initial policy, committed once
    assert ref1["source"] == "init" and ref1["uri"] == str(out / "kl-reference")
    assert (out / "kl-reference" / "COMMIT.json").exists()

    r = subprocess.run(cmd, cwd=TRAINER, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    final = json.loads((out / "step-000006" / "trainer_state.json").read_text())
    assert final["kl_reference"] == ref1, "the resumed attempt anchored the KL to other weights"
    assert f"KL reference {ref1['uri']} (sha256 {ref1['sha256'][:12]}…, as recorded)" in r.stderr
    from trainflow_trainer.model import load_state_dict

    ref_model = Transformer(json_config(out / "kl-reference"))
    ref_model.load_state_dict(load_state_dict(out / "kl-reference"), strict=False)
    assert weights_hash(ref_model) == ref1["sha256"]

    kl = [h["metrics"]["kl_ref"] for h in final["history"]]
    assert len(kl) == 6
    assert kl[0] < 1e-6  # step 1: the policy is the reference
    # no reset: the first resumed step measures the KL to the initial policy, not to the resumed weights
    # (which would give ~0 again), and the curve goes on from where attempt 1 left it
    assert kl[k] > 0.25 * kl[k - 1] > 0, kl
    assert all(v > 1e-6 for v in kl[1:]), kl
    # temperature 1.25 and top_p 0.9 end to end (agents → server → proxy → trainer): on-policy ratios are 1
    first = final["history"][0]["metrics"]
    assert abs(first["ratio_mean"] - 1) < 1e-4 and abs(first["ratio_max"] - 1) < 1e-4, first
    assert first["clip_frac"] == 0.0


def json_config(folder: Path) -> ModelConfig:
    from trainflow_trainer.model import load_config

    return load_config(folder)


def test_reference_weights_hash_sees_every_parameter():
    a = make_model()
    b = copy.deepcopy(a)
    assert weights_hash(a) == weights_hash(b)
    with torch.no_grad():
        next(iter(b.parameters())).view(-1)[0] += 1e-7
    assert weights_hash(a) != weights_hash(b)
