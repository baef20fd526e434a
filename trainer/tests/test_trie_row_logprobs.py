"""The fused full-vocabulary log-prob (`row_logprobs`, the training step's path without nucleus or entropy)
equals the composed `sampling_logprobs` in value and gradient, chunked or not, at every temperature kind
(1, ≠ 1, ≤ 0 greedy), with rows shared by several entries and rows no entry uses (gradient exactly 0);
and `entry_logprobs` picks the composed ops whenever a nucleus or the entropy is asked for."""

from __future__ import annotations

import pytest
import torch

from trainflow_trainer.trie import losses
from trainflow_trainer.trie.losses import entry_logprobs, row_entropy, row_logprobs, sampling_logprobs


def _case(seed: int, rows: int = 37, vocab: int = 11, entries: int = 90) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    logits = (3 * torch.randn(rows, vocab, generator=g, dtype=torch.float64)).requires_grad_()
    r = torch.randint(0, rows - 3, (entries,), generator=g)  # the last 3 rows: no entry, zero-free gradient
    t = torch.randint(0, vocab, (entries,), generator=g)
    w = torch.randn(entries, generator=g, dtype=torch.float64)
    return logits, r, t, w


@pytest.mark.parametrize("temperature", [1.0, 0.7, 1.6, 0.0])
@pytest.mark.parametrize("chunk_elements", [2**18, 40, 1])  # one chunk; 3 rows a chunk; one row a chunk
def test_fused_equals_composed(temperature: float, chunk_elements: int, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(losses, "_CHUNK_ELEMENTS", chunk_elements)
    logits, r, t, w = _case(int(temperature * 10) + chunk_elements)
    want = sampling_logprobs(logits, r, t, temperature)[0]
    (want_grad,) = torch.autograd.grad((want * w).sum(), logits)
    got = row_logprobs(logits, r, t, temperature)
    (got_grad,) = torch.autograd.grad((got * w).sum(), logits)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(got_grad, want_grad, rtol=1e-12, atol=1e-12)
    assert float(got_grad[-3:].abs().max()) == 0.0  # rows no entry reads: no gradient at all
    assert torch.autograd.gradcheck(lambda x: row_logprobs(x, r, t, temperature), (logits,))


def test_entry_logprobs_falls_back_for_nucleus_and_entropy() -> None:
    logits, r, t, _ = _case(3)
    logp, z, lse = sampling_logprobs(logits, r, t, 0.9, 0.6)
    got, ent = entry_logprobs(logits, r, t, 0.9, 0.6, with_entropy=True)
    torch.testing.assert_close(got, logp)
    assert ent is not None
    torch.testing.assert_close(ent, row_entropy(z, lse)[r])
    fused, none = entry_logprobs(logits, r, t, 0.9, 1.0, with_entropy=False)
    assert none is None
    torch.testing.assert_close(fused, sampling_logprobs(logits, r, t, 0.9)[0], rtol=1e-12, atol=1e-12)
