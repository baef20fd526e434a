"""Trie packing is exact: per-branch log-probs, loss and every parameter gradient equal the flat computation.

The flat reference (`flat_reference_loss`) is the plain thing: a right-padded [B, T] batch through the real
Transformer with causal attention and a full log-softmax. Random batches: random depth and branching, shared
and unshared prefixes (tiny vocabulary, so accidental sharing happens too, including duplicate branches and
branches that are prefixes of others), random and fractional loss masks, advantages of both signs, behaviour
log-probs perturbed so PPO clipping is active on some tokens and not on others.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from trainflow_trainer.model import ModelConfig, Transformer
from trainflow_trainer.trie import LossSpec, Trajectory, build_forest, flat_forward_backward, packed_forward_backward
from trainflow_trainer.trie.losses import flat_reference_loss
from trainflow_trainer.trie.step import packed_logprobs

VOCAB = 7
CFG = ModelConfig(
    vocab_size=VOCAB,
    hidden_size=32,
    intermediate_size=48,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=256,
)

SPECS = [
    LossSpec.from_config("sft"),
    LossSpec(kind="ppo", aggregation="seq_mean", kl_coef=0.05),
    LossSpec(kind="ppo", eps_high=0.28, entropy_coef=0.01),
    LossSpec(kind="ppo", aggregation="sum", eps_low=0.1, eps_high=0.3, kl_coef=0.1, entropy_coef=0.02),
]


# The other model families on the same shape: Qwen3 (q/k norm, head_dim 12 ≠ 32/4), Llama 3.x (llama3 RoPE,
# an original context short enough that the scaling changes frequencies here, untied head).
FAMILIES = {
    "qwen2": CFG,
    "qwen3": dataclasses.replace(CFG, attention_bias=False, qk_norm=True, head_dim=12),
    "llama3": dataclasses.replace(
        CFG,
        attention_bias=False,
        tie_word_embeddings=False,
        rope_theta=500000.0,
        rope_scaling_factor=8.0,
        rope_original_max_position_embeddings=32,
    ),
}


def make_model(dtype: torch.dtype, seed: int = 0, cfg: ModelConfig = CFG) -> Transformer:
    torch.manual_seed(seed)
    model = Transformer(cfg).to(dtype)
    if cfg is not CFG:  # norm scales (q/k norms included) away from 1, so their gradients are exercised
        with torch.no_grad():
            for name, p in model.named_parameters():
                if "norm" in name:
                    p.normal_(1.0, 0.2)
    return model


def random_sequences(rng: np.random.Generator, n_branches: int, max_len: int, share: bool = True) -> list[list[int]]:
    """Branches grown off random prefixes of earlier ones (forks at random depths), or fresh."""
    seqs: list[list[int]] = []
    for b in range(n_branches):
        if share and seqs and rng.random() < 0.8:
            base = seqs[rng.integers(len(seqs))]
            prefix = base[: rng.integers(1, len(base) + 1)]
        else:
            prefix = [int(rng.integers(VOCAB))] if share else [b]  # unshared: a distinct first token
        ext = int(rng.integers(0 if len(prefix) >= 2 else 2 - len(prefix), max(max_len - len(prefix), 1) + 1))
        seqs.append(prefix + rng.integers(0, VOCAB, ext).tolist())
    return seqs


def random_trajectories(rng: np.random.Generator, model: Transformer, seqs: list[list[int]]) -> list[Trajectory]:
    """Masks, advantages (both signs), weights, versions; behaviour/reference log-probs near the model's."""
    base = [Trajectory(s) for s in seqs]
    _, true_lp = flat_reference_loss(model, base, LossSpec())
    out = []
    for s, lp_t in zip(seqs, true_lp):
        n = len(s)
        mask = rng.choice([0.0, 1.0, 1.0, 1.0, 0.5], size=n)
        mask[0] = 0.0
        lp = lp_t.detach().double().cpu().numpy()
        out.append(
            Trajectory(
                tokens=s,
                loss_mask=mask,
                logprobs=np.r_[0.0, lp + rng.normal(0, 0.4, n - 1)],
                versions=rng.integers(0, 3, n),
                ref_logprobs=np.r_[0.0, lp + rng.normal(0, 0.2, n - 1)],
                advantage=float(rng.normal()),
                weight=float(rng.uniform(0.5, 2.0)),
            )
        )
    return out


def grads_of(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    # No trained token at all leaves .grad unset: that is a zero gradient.
    return {n: torch.zeros_like(p) if p.grad is None else p.grad.detach().clone() for n, p in model.named_parameters()}


def run_reference(model, trajs, spec):
    model.zero_grad()
    loss, _ = flat_reference_loss(model, trajs, spec)
    loss.backward()
    return float(loss.detach()), grads_of(model)


def run_packed(model, trajs, spec, max_tokens, fn=packed_forward_backward):
    model.zero_grad()
    metrics = fn(model, trajs, spec, max_tokens)
    return metrics, grads_of(model)


def assert_grads_close(got: dict, want: dict, rtol: float) -> None:
    """Relative error per parameter tensor, ‖got − want‖ / ‖want‖ ≤ rtol.

    A parameter whose true gradient is (analytically) zero, such as the key-projection bias (a per-query
    constant shift of the scores leaves the softmax unchanged), has only rounding noise on both sides; for
    those the difference is measured against the whole gradient's norm instead.
    """
    total = torch.sqrt(sum((w.double() ** 2).sum() for w in want.values()))
    for name, w in want.items():
        diff = float((got[name].double() - w.double()).norm())
        scale = float(w.double().norm())
        if scale < 1e-6 * float(total):
            assert diff <= rtol * float(total), f"{name}: |diff| {diff:.3e} vs total {float(total):.3e}"
        else:
            assert diff <= rtol * scale, f"{name}: relative error {diff / scale:.3e} > {rtol}"


def check_against_reference(
    seed: int,
    dtype: torch.dtype,
    rtol: float,
    spec: LossSpec,
    n_branches: int,
    max_len: int,
    cfg: ModelConfig = CFG,
):
    rng = np.random.default_rng(seed)
    model = make_model(dtype, seed, cfg)
    seqs = random_sequences(rng, n_branches, max_len)
    trajs = random_trajectories(rng, model, seqs)

    # Per-branch log-probs: trie gather from shared logits vs the padded flat forward.
    _, want_lp = flat_reference_loss(model, trajs, spec)
    got_lp = packed_logprobs(model, trajs, max_tokens=4096)
    for g, w in zip(got_lp, want_lp):
        torch.testing.assert_close(g, w.detach().to(g.dtype), rtol=rtol, atol=rtol)

    want_loss, want_grads = run_reference(model, trajs, spec)
    metrics, got_grads = run_packed(model, trajs, spec, max_tokens=4096)
    assert abs(metrics["loss"] - want_loss) <= rtol * max(abs(want_loss), 1e-3), (metrics["loss"], want_loss)
    assert_grads_close(got_grads, want_grads, rtol)
    return trajs, metrics


@settings(max_examples=8, deadline=None)
@given(
    seed=st.integers(0, 2**31 - 1),
    spec=st.sampled_from(SPECS),
    n_branches=st.integers(1, 9),
    max_len=st.integers(2, 24),
)
def test_trie_equals_flat_float64(seed, spec, n_branches, max_len):
    trajs, metrics = check_against_reference(seed, torch.float64, 1e-10, spec, n_branches, max_len)
    assert metrics["unique_tokens"] <= metrics["total_tokens"]


@settings(max_examples=6, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), spec=st.sampled_from(SPECS))
def test_trie_equals_flat_float32(seed, spec):
    check_against_reference(seed, torch.float32, 1e-5, spec, n_branches=8, max_len=20)


@pytest.mark.parametrize("family", list(FAMILIES))
@pytest.mark.parametrize("seed", [5, 6])
def test_trie_equals_flat_per_family(family, seed):
    """Each supported family: trie-packed log-probs, loss and every gradient equal the flat batch (float64)."""
    spec = SPECS[seed % len(SPECS)]
    check_against_reference(seed, torch.float64, 1e-10, spec, n_branches=8, max_len=20, cfg=FAMILIES[family])


def test_random_batches_exercise_sharing_and_clipping():
    """The generators above really produce what the property tests claim to cover."""
    rng = np.random.default_rng(1)
    model = make_model(torch.float64)
    seqs = random_sequences(rng, 12, 20)
    trajs = random_trajectories(rng, model, seqs)
    forest = build_forest(trajs)
    assert forest.unique_tokens < forest.total_tokens  # shared prefixes
    assert len(forest.trees) >= 2  # several trees
    assert any(np.bincount(forest.parent[forest.parent >= 0]) >= 2)  # a node with several children
    advs = [t.advantage for t in trajs]
    assert min(advs) < 0 < max(advs)
    spec = LossSpec(kind="ppo", eps_high=0.28)
    metrics, _ = run_packed(model, trajs, spec, 4096)
    assert 0.05 < metrics["clip_frac"] < 0.95, metrics["clip_frac"]
    check_against_reference(1, torch.float64, 1e-10, spec, 12, 20)


@settings(max_examples=8, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), spec=st.sampled_from(SPECS))
def test_partitioned_equals_unpartitioned(seed, spec):
    rng = np.random.default_rng(seed)
    model = make_model(torch.float64, seed)
    seqs = random_sequences(rng, 10, 24)
    trajs = random_trajectories(rng, model, seqs)
    longest = max(len(s) for s in seqs)
    whole, g_whole = run_packed(model, trajs, spec, 10_000)
    budget = longest + int(rng.integers(0, 6))  # trees bigger than this get cut into parts
    parts, g_parts = run_packed(model, trajs, spec, budget)
    forest = build_forest(trajs)
    if max(e - s for s, e in forest.trees) > budget:
        assert parts["packed_tokens"] >= whole["packed_tokens"]  # root paths recomputed
    assert abs(parts["loss"] - whole["loss"]) <= 1e-10 * max(abs(whole["loss"]), 1e-3)
    assert_grads_close(g_parts, g_whole, 1e-10)


def test_partitioning_happens_and_stays_exact():
    """One bushy tree much larger than the budget: many parts, root paths recomputed, gradients unchanged."""
    rng = np.random.default_rng(7)
    model = make_model(torch.float64)
    prompt = rng.integers(0, VOCAB, 12).tolist()
    seqs = [prompt + rng.integers(0, VOCAB, int(rng.integers(3, 15))).tolist() for _ in range(10)]
    trajs = random_trajectories(rng, model, seqs)
    spec = LossSpec(kind="ppo", aggregation="seq_mean", kl_coef=0.1)
    whole, g_whole = run_packed(model, trajs, spec, 10_000)
    parts, g_parts = run_packed(model, trajs, spec, 30)
    assert whole["micro_batches"] == 1 and parts["micro_batches"] >= 4
    assert parts["packed_tokens"] > whole["packed_tokens"] == whole["unique_tokens"]
    assert abs(parts["loss"] - whole["loss"]) <= 1e-10 * abs(whole["loss"])
    assert_grads_close(g_parts, g_whole, 1e-10)
    ref_loss, g_ref = run_reference(model, trajs, spec)
    assert_grads_close(g_parts, g_ref, 1e-10)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_no_sharing_is_exactly_flat(dtype):
    """Trajectories with distinct first tokens: trie mode runs the very same computation as flat mode."""
    rng = np.random.default_rng(3)
    model = make_model(dtype)
    seqs = random_sequences(rng, VOCAB, 30, share=False)
    trajs = random_trajectories(rng, model, seqs)
    spec = dataclasses.replace(LossSpec(kind="ppo", eps_high=0.28), kl_coef=0.05)
    trie, g_trie = run_packed(model, trajs, spec, 64)
    flat, g_flat = run_packed(model, trajs, spec, 64, fn=flat_forward_backward)
    assert trie["unique_tokens"] == trie["total_tokens"] and trie["micro_batches"] > 1
    assert trie["loss"] == flat["loss"]
    for name in g_flat:
        assert torch.equal(g_trie[name], g_flat[name]), name
    ref_loss, g_ref = run_reference(model, trajs, spec)
    assert_grads_close(g_trie, g_ref, 1e-10 if dtype == torch.float64 else 1e-5)


def test_flat_mode_equals_reference_with_sharing():
    """Flat mode (sharing-free packing) is itself exact, so trie-vs-flat in the bench compares equals."""
    rng = np.random.default_rng(11)
    model = make_model(torch.float64)
    trajs = random_trajectories(rng, model, random_sequences(rng, 8, 20))
    spec = LossSpec(kind="ppo", aggregation="seq_mean")
    flat, g_flat = run_packed(model, trajs, spec, 48, fn=flat_forward_backward)
    trie, g_trie = run_packed(model, trajs, spec, 48)
    assert flat["unique_tokens"] == flat["total_tokens"] > trie["unique_tokens"]
    ref_loss, g_ref = run_reference(model, trajs, spec)
    assert_grads_close(g_flat, g_ref, 1e-10)
    assert_grads_close(g_trie, g_ref, 1e-10)
