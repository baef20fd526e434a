"""Data: midtrain packing (doc ids, positions, labels), SFT assistant-only loss, mixing, cursor, Parquet."""

from __future__ import annotations

import json

import pytest
import torch
from specs import data_sources

from trainflow_trainer.data import (
    IGNORE,
    DataError,
    FlatPacker,
    load_source_rows,
    load_stream,
)
from trainflow_trainer.storage import Storage


def stream_of(demo_dir, tok, kind, seed=3):
    if kind == "midtrain":
        sources = data_sources(
            {"path": str(demo_dir / "midtrain-code.jsonl"), "weight": 0.4},
            {"path": str(demo_dir / "midtrain-tools.jsonl"), "weight": 0.6},
        )
    else:
        sources = data_sources({"path": str(demo_dir / "sft.jsonl")})
    return load_stream(sources, Storage(), tok, kind, seed)


def test_midtrain_rows_pack_documents_with_restarting_positions(demo_dir, tok):
    packer = FlatPacker(stream_of(demo_dir, tok, "midtrain"), seq_len=96, pad_id=tok.pad_id)
    b = packer.next_batch(4)
    assert b.input_ids.shape == (4, 96)
    for r in range(4):
        ids, pos, doc, lab = b.input_ids[r], b.position_ids[r], b.doc_ids[r], b.labels[r]
        for t in range(96):
            if t > 0 and doc[t] == doc[t - 1]:
                assert pos[t] == pos[t - 1] + 1
            else:
                assert pos[t] == 0  # a new document starts at position 0
        # Within a document, the label is the next token; the last token of a document whose end is in the
        # row is <|endoftext|> with no label.
        for t in range(95):
            if doc[t] == doc[t + 1]:
                assert lab[t] == ids[t + 1]
        eot = (ids == tok.endoftext_id).nonzero().flatten().tolist()
        assert eot, "rows of short documents hold document ends"
        for t in eot:
            assert lab[t] == IGNORE
    # Rows are full: documents split across rows, nothing padded.
    assert not (b.input_ids == tok.pad_id).any()


def test_split_document_continues_in_next_row(demo_dir, tok):
    packer = FlatPacker(stream_of(demo_dir, tok, "midtrain"), seq_len=40, pad_id=tok.pad_id)
    b = packer.next_batch(6)
    for r in range(5):
        # The last token of a row that cuts a document has the next row's first token as label.
        if b.labels[r, -1] != IGNORE:
            assert b.labels[r, -1] == b.input_ids[r + 1, 0]


def test_sft_loss_only_on_assistant_tokens(demo_dir, tok):
    stream = stream_of(demo_dir, tok, "sft")
    rows = [json.loads(line) for line in (demo_dir / "sft.jsonl").read_text().splitlines()]
    packer = FlatPacker(stream, seq_len=2048, pad_id=tok.pad_id)
    b = packer.next_batch(2)
    # Every label is the next token, and that token was produced by the assistant.
    assistant_texts = {m["content"] for r in rows for m in r["messages"] if m["role"] == "assistant" and m["content"]}
    for r in range(2):
        targets = [int(b.labels[r, t]) for t in range(2047) if b.labels[r, t] != IGNORE]
        assert targets
        text = tok.decode(targets)
        assert "<|im_start|>" not in text and "<tool_response>" not in text
        assert "user" not in text and "Observation" not in text
        assert any(a in text for a in assistant_texts)
        assert "<tool_call>" in text and text.count("<|im_end|>") >= 2
        for t in range(2047):
            if b.labels[r, t] != IGNORE:
                assert b.labels[r, t] == b.input_ids[r, t + 1] and b.doc_ids[r, t] == b.doc_ids[r, t + 1]
    # Conversations are never split: padding (no labels) fills the rest of a row instead.
    pad = b.input_ids == tok.pad_id
    assert (b.labels[pad] == IGNORE).all()


def test_sft_loss_gradient_ignores_non_assistant_tokens(demo_dir, tok):
    """Changing what a non-target label would be changes nothing: the loss reads only assistant targets."""
    b = FlatPacker(stream_of(demo_dir, tok, "sft"), seq_len=256, pad_id=tok.pad_id).next_batch(1)
    logits = torch.randn(1, 256, tok.vocab_size, requires_grad=True)
    b.loss_sum(logits).backward()
    assert logits.grad is not None
    rows_with_grad = logits.grad[0].abs().sum(-1) > 0
    assert torch.equal(rows_with_grad, b.labels[0] != IGNORE)


def test_cursor_resumes_exactly(demo_dir, tok):
    a = FlatPacker(stream_of(demo_dir, tok, "midtrain"), seq_len=64, pad_id=tok.pad_id)
    straight = [a.next_batch(3) for _ in range(6)]
    b = FlatPacker(stream_of(demo_dir, tok, "midtrain"), seq_len=64, pad_id=tok.pad_id)
    first = [b.next_batch(3) for _ in range(3)]
    state = json.loads(json.dumps(b.state_dict()))  # it must survive JSON (trainer_state.json)
    c = FlatPacker(stream_of(demo_dir, tok, "midtrain"), seq_len=64, pad_id=tok.pad_id)
    c.load_state_dict(state)
    rest = [c.next_batch(3) for _ in range(3)]
    for x, y in zip(straight, first + rest):
        assert torch.equal(x.input_ids, y.input_ids) and torch.equal(x.labels, y.labels)


def test_mixing_follows_weights_and_epochs_reshuffle(demo_dir, tok):
    stream = stream_of(demo_dir, tok, "midtrain")
    n = 600
    for _ in range(n):
        stream.next()
    drawn = [c["epoch"] * len(s) + c["pos"] for c, s in zip(stream.cursors, stream.sources)]
    assert sum(drawn) == n
    assert abs(drawn[1] / n - 0.6) < 0.07
    # Same seed, same order; another seed, another order.
    s1, s2, s3 = (stream_of(demo_dir, tok, "midtrain", seed) for seed in (1, 1, 2))
    seq = lambda s: [tuple(s.next().ids) for _ in range(20)]
    a, b, c = seq(s1), seq(s2), seq(s3)
    assert a == b and a != c


def test_parquet_and_folder_sources(demo_dir, tok, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [json.loads(line) for line in (demo_dir / "midtrain-code.jsonl").read_text().splitlines()]
    pq.write_table(pa.Table.from_pylist(rows[:10]), tmp_path / "a.parquet")
    (tmp_path / "b.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows[10:15]))
    got = load_source_rows(data_sources({"path": str(tmp_path)})[0], Storage())  # a folder: the extension decides
    assert got == rows[:15]


def test_bad_data_is_named(demo_dir, tok, tmp_path):
    nope, bad, wrong = data_sources(*({"path": str(tmp_path / f)} for f in ("nope.jsonl", "bad.jsonl", "wrong.jsonl")))
    with pytest.raises(DataError, match="no such file"):
        load_source_rows(nope, Storage())
    (tmp_path / "bad.jsonl").write_text('{"text": "ok"}\n{oops\n')
    with pytest.raises(DataError, match=r"bad.jsonl:2: invalid JSON"):
        load_source_rows(bad, Storage())
    (tmp_path / "wrong.jsonl").write_text('{"body": "x"}\n')
    s = load_stream([wrong], Storage(), tok, "midtrain", 0)
    with pytest.raises(DataError, match="needs a string `text`"):
        s.next()
