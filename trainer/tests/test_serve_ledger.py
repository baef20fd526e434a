"""The Python reader of the data plane's ledger: cursor reads across segments, torn tails ignored."""

import hashlib
import json

from trainflow_trainer.serve.ledger import read_ledger


def line(seq: int, id: str) -> bytes:
    payload = json.dumps({"seq": seq, "id": id, "record": {"reward": seq % 2}})
    return f"{hashlib.sha256(payload.encode()).hexdigest()[:16]} {payload}\n".encode()


def test_reads_after_cursor_across_segments_and_ignores_torn_tail(tmp_path):
    (tmp_path / "segment-000000000000.log").write_bytes(b"".join(line(i, f"t{i}") for i in range(3)))
    torn = line(5, "t5")[:25]
    (tmp_path / "segment-000000000003.log").write_bytes(line(3, "t3") + line(4, "t4") + torn)
    assert [e["id"] for e in read_ledger(tmp_path)] == ["t0", "t1", "t2", "t3", "t4"]
    assert [e["seq"] for e in read_ledger(tmp_path, after=2)] == [3, 4]
    assert [e["seq"] for e in read_ledger(tmp_path, after=0, limit=2)] == [1, 2]
    assert read_ledger(tmp_path, after=4) == []
    # A corrupted record ends what readers trust in that segment.
    bad = bytearray((tmp_path / "segment-000000000003.log").read_bytes())
    bad[30] ^= 1
    (tmp_path / "segment-000000000003.log").write_bytes(bytes(bad))
    assert [e["seq"] for e in read_ledger(tmp_path, after=2)] == []
