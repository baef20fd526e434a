"""Training data: sources → a deterministic weighted stream of examples → packed batches, with a cursor.

    Source      one JSONL/Parquet file or folder of them (local or s3://), read into memory
    ExampleStream   draws the k-th example: source chosen by weight with an RNG seeded by (seed, k), row taken
                from that source's per-epoch permutation (seeded by (seed, source, epoch)); its whole state is
                {drawn: k, sources: [{epoch, pos}]} — a few integers, so a resume continues with exactly the
                next example
    Packer      turns examples into fixed-shape rows and batches; its state (a partly used example) joins the
                cursor. `FlatPacker` packs several examples per row with a DocumentMask; the trie engineer's
                packer plugs in through `make_packer` (packing.mode = "trie").

Examples carry token ids and a per-token target mask: midtrain documents train on every next token (the
text plus an <|endoftext|>); SFT conversations only on assistant tokens. Rows already tokenised
(`{"input_ids": [...], "loss_mask": [...]}`) are used as recorded, never re-tokenised. A `gold_trajectories`
source turns SWE instances into conversations first (their gold patches as agent episodes, tasks/swe/gold.py).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch import Tensor

from .attention import AttentionMask, DocumentMask
from .contract import DataSource
from .errors import BadInput
from .storage import Storage, is_s3
from .tokenizer import ChatFormatError, Tokenizer

IGNORE = -100
DATA_KINDS = ("rows", "gold_trajectories")  # what a source's rows are (the config schema's DATA_KINDS)


class DataError(BadInput):
    """Bad training data (missing file, wrong field): the job exits 2 with this message."""


# ------------------------------------------------------------------------------------------------ sources


def _format_of(name: str, fmt: str) -> str:
    """A file's format: its extension when it has a known one (a folder may mix JSONL and Parquet files),
    else the source's `format`."""
    if name.endswith(".parquet"):
        return "parquet"
    if name.endswith((".jsonl", ".json")):
        return "jsonl"
    return fmt


def _parse_rows(name: str, data: bytes, fmt: str) -> list[dict]:
    if fmt == "parquet":
        import io

        import pyarrow.parquet as pq

        return pq.read_table(io.BytesIO(data)).to_pylist()
    rows = []
    for i, line in enumerate(data.decode("utf-8").splitlines()):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as e:
                raise DataError(f"{name}:{i + 1}: invalid JSON ({e.msg})") from None
    return rows


def load_source_rows(spec: DataSource, storage: Storage) -> list[dict]:
    """All rows of a file, or of every .jsonl/.parquet file of a folder (sorted by name)."""
    path = spec.path
    if path is None:
        raise DataError(f"data source from {spec.from_}: not resolved to a file (run the stage in its pipeline)")
    if is_s3(path):
        files = (
            [path]
            if not path.endswith("/") and storage.exists(path)
            else [
                path.rstrip("/") + "/" + rel for rel in storage.list_files(path) if rel.endswith((".jsonl", ".parquet"))
            ]
        )
    else:
        p = Path(path)
        if p.is_file():
            files = [str(p)]
        elif p.is_dir():
            files = sorted(str(f) for f in p.rglob("*") if f.suffix in (".jsonl", ".parquet"))
        else:
            files = []
    if not files:
        raise DataError(f"data source {path}: no such file or folder (or no .jsonl/.parquet inside)")
    rows: list[dict] = []
    for f in files:
        rows.extend(_parse_rows(f, storage.read_bytes(f), _format_of(f, spec.format)))
    if not rows:
        raise DataError(f"data source {path}: no rows")
    return rows


# ------------------------------------------------------------------------------------------------ examples


@dataclass
class Example:
    ids: list[int]
    targets: list[bool]  # targets[t]: token t is a training target (predicted from tokens < t)
    splittable: bool  # documents may be split across rows; conversations are not


def midtrain_example(row: dict, tok: Tokenizer, where: str) -> Example:
    if "input_ids" in row:
        ids = [int(x) for x in row["input_ids"]]
    elif isinstance(row.get("text"), str):
        ids = tok.encode(row["text"]) + [tok.endoftext_id]
    else:
        raise DataError(f"{where}: a midtrain row needs a string `text` (or pre-tokenised `input_ids`)")
    return Example(ids, [True] * len(ids), splittable=True)


def sft_example(row: dict, tok: Tokenizer, where: str) -> Example:
    if "input_ids" in row:
        ids = [int(x) for x in row["input_ids"]]
        mask = row.get("loss_mask")
        if not isinstance(mask, list) or len(mask) != len(ids):
            raise DataError(f"{where}: pre-tokenised SFT rows need `loss_mask` as long as `input_ids`")
        return Example(ids, [bool(m) for m in mask], splittable=False)
    if not isinstance(row.get("messages"), list):
        raise DataError(f"{where}: an SFT row needs `messages` (a list of {{role, content}})")
    try:
        r = tok.render_chat(row["messages"], tools=row.get("tools"))
    except ChatFormatError as e:
        raise DataError(f"{where}: {e}") from None
    return Example(r.ids, r.assistant_mask, splittable=False)


class ExampleStream:
    """Deterministic weighted mixture over sources; see the module doc for the state."""

    def __init__(
        self,
        sources: list[list[dict]],
        weights: list[float],
        seed: int,
        to_example: Callable[[dict, str], Example],
        names: list[str],
    ):
        self.sources, self.names, self.seed = sources, names, seed
        w = np.asarray(weights, dtype=np.float64)
        self.probs = w / w.sum()
        self.to_example = to_example
        self.drawn = 0
        self.cursors = [{"epoch": 0, "pos": 0} for _ in sources]
        self._perms: dict[int, tuple[int, np.ndarray]] = {}

    def _perm(self, i: int, epoch: int) -> np.ndarray:
        cached = self._perms.get(i)
        if cached is None or cached[0] != epoch:
            perm = np.random.default_rng([self.seed, 7919, i, epoch]).permutation(len(self.sources[i]))
            self._perms[i] = cached = (epoch, perm)
        return cached[1]

    def next(self) -> Example:
        if len(self.sources) == 1:
            i = 0
        else:
            i = int(np.random.default_rng([self.seed, 104729, self.drawn]).choice(len(self.sources), p=self.probs))
        c = self.cursors[i]
        row_idx = int(self._perm(i, c["epoch"])[c["pos"]])
        c["pos"] += 1
        if c["pos"] == len(self.sources[i]):
            c["epoch"], c["pos"] = c["epoch"] + 1, 0
        self.drawn += 1
        return self.to_example(self.sources[i][row_idx], f"{self.names[i]} row {row_idx}")

    def state_dict(self) -> dict:
        return {"drawn": self.drawn, "sources": [dict(c) for c in self.cursors]}

    def load_state_dict(self, state: dict) -> None:
        if len(state["sources"]) != len(self.sources):
            raise DataError(
                f"data cursor has {len(state['sources'])} sources, the stage config has {len(self.sources)}"
            )
        self.drawn = int(state["drawn"])
        self.cursors = [{"epoch": int(c["epoch"]), "pos": int(c["pos"])} for c in state["sources"]]


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def gold_trajectory_rows(spec: DataSource, log: Callable[[str], None] = _log) -> list[dict]:
    """The SFT rows of a gold_trajectories source: each SWE instance of its (local) JSONL as the reference agent's
    episode that makes the gold patch (tasks/swe/gold.py); an instance the tools cannot replay is skipped, logged."""
    from .tasks.swe import load_instances
    from .tasks.swe.gold import GoldError, gold_trajectory

    path = spec.path
    if path is None or is_s3(path):
        raise DataError(f"data source {path}: gold trajectories are read from a local SWE instances JSONL")
    if not Path(path).is_file():
        raise DataError(f"data source {path}: no such SWE instances file")
    instances, bad = load_instances(path)
    for where, why in bad:
        log(f"trainflow: data source {path}: skipped {where}: {why}")
    rows = []
    for inst in instances:
        try:
            rows.append(gold_trajectory(inst))
        except GoldError as e:
            log(f"trainflow: data source {path}: no gold trajectory for {inst.instance_id}: {e}")
    if not rows:
        raise DataError(f"data source {path}: no instance has a gold trajectory (see the lines above)")
    log(f"trainflow: data source {path}: {len(rows)} gold trajectories of {len(instances)} instances")
    return rows


def load_stream(sources: list[DataSource], storage: Storage, tok: Tokenizer, kind: str, seed: int) -> ExampleStream:
    make = {"midtrain": midtrain_example, "sft": sft_example}[kind]
    rows = [gold_trajectory_rows(s) if s.kind == "gold_trajectories" else load_source_rows(s, storage) for s in sources]
    names = [s.path or f"from {s.from_}" for s in sources]
    return ExampleStream(rows, [s.weight for s in sources], seed, lambda row, where: make(row, tok, where), names)


# ------------------------------------------------------------------------------------------------ batches


@dataclass
class Batch:
    """Rows of packed tokens. labels[b, t] is the target for the logits at t (IGNORE = no loss);
    doc_ids give the DocumentMask (each packed example, and padding, has its own id)."""

    input_ids: Tensor  # [B, T] long
    position_ids: Tensor  # [B, T] long
    labels: Tensor  # [B, T] long
    doc_ids: Tensor  # [B, T] long

    @property
    def num_rows(self) -> int:
        return self.input_ids.shape[0]

    def num_targets(self) -> int:
        return int((self.labels != IGNORE).sum())

    def num_tokens(self) -> int:
        return self.input_ids.numel()

    def select(self, rows: slice) -> Batch:
        return Batch(self.input_ids[rows], self.position_ids[rows], self.labels[rows], self.doc_ids[rows])

    def to(self, device: torch.device) -> Batch:
        return Batch(
            *(t.to(device, non_blocking=True) for t in (self.input_ids, self.position_ids, self.labels, self.doc_ids))
        )

    def attention(self) -> AttentionMask:
        return DocumentMask(self.doc_ids)

    def loss_sum(self, logits: Tensor) -> Tensor:
        """Summed cross-entropy over the targets (fp32 at least: float64 stays float64, as in the trie step, so
        the exactness tests compare in float64); the caller divides by the global target count."""
        wide = logits if logits.dtype == torch.float64 else logits.float()
        return torch.nn.functional.cross_entropy(
            wide.reshape(-1, logits.shape[-1]), self.labels.reshape(-1), ignore_index=IGNORE, reduction="sum"
        )


class Packer(Protocol):
    """What the training loop asks of a packer (flat here, trie in trie/)."""

    def next_batch(self, rows: int) -> Any: ...  # a Batch, or any object with Batch's methods
    def state_dict(self) -> dict: ...  # JSON-serialisable, part of the data cursor
    def load_state_dict(self, state: dict) -> None: ...


class FlatPacker:
    """Packs examples back to back into rows of seq_len tokens.

    Each example gets its own doc id (no attention across examples) and position ids from 0. A splittable
    example (a document) that does not fit fills the row and its rest opens the next row; a conversation that
    does not fit goes to the next row (the rest of the row is padding), and one longer than seq_len is
    truncated. Label of token t = token t+1 of the same example, when that token is a target.
    """

    def __init__(self, stream: ExampleStream, seq_len: int, pad_id: int):
        self.stream, self.seq_len, self.pad_id = stream, seq_len, pad_id
        self.pending: Example | None = None  # drawn but not yet placed (or the rest of a split document)

    def _take(self) -> Example:
        if self.pending is not None:
            ex, self.pending = self.pending, None
            return ex
        return self.stream.next()

    def _row(self) -> tuple[list[int], list[int], list[int], list[int]]:
        t = self.seq_len
        ids: list[int] = []
        pos: list[int] = []
        labels: list[int] = []
        docs: list[int] = []
        doc = 0
        while len(ids) < t:
            ex = self._take()
            room = t - len(ids)
            n = len(ex.ids)
            if n > room:
                if ex.splittable:
                    # This row takes the first `room` tokens and the rest opens the next row. The piece's last
                    # label is the document's next token, so no target is lost at the cut.
                    self.pending = Example(ex.ids[room:], ex.targets[room:], True)
                    piece_ids, piece_next = ex.ids[:room], ex.ids[1 : room + 1]
                    piece_tgt = ex.targets[1 : room + 1]
                elif len(ids) > 0:
                    self.pending = ex
                    break
                else:
                    piece_ids, piece_next, piece_tgt = ex.ids[:room], ex.ids[1 : room + 1], ex.targets[1 : room + 1]
            else:
                piece_ids, piece_next, piece_tgt = ex.ids, ex.ids[1:] + [IGNORE], ex.targets[1:] + [False]
            ids.extend(piece_ids)
            pos.extend(range(len(piece_ids)))
            labels.extend(nx if tg else IGNORE for nx, tg in zip(piece_next, piece_tgt))
            docs.extend([doc] * len(piece_ids))
            doc += 1
        pad = t - len(ids)
        if pad:
            ids.extend([self.pad_id] * pad)
            pos.extend(range(pad))
            labels.extend([IGNORE] * pad)
            docs.extend([doc] * pad)
        return ids, pos, labels, docs

    def next_batch(self, rows: int) -> Batch:
        cols = list(zip(*(self._row() for _ in range(rows))))
        return Batch(*(torch.tensor(c, dtype=torch.long) for c in cols))

    def state_dict(self) -> dict:
        p = self.pending
        return {
            "stream": self.stream.state_dict(),
            "pending": None if p is None else {"ids": p.ids, "targets": p.targets, "splittable": p.splittable},
        }

    def load_state_dict(self, state: dict) -> None:
        self.stream.load_state_dict(state["stream"])
        p = state.get("pending")
        self.pending = None if p is None else Example(list(p["ids"]), list(p["targets"]), bool(p["splittable"]))


@dataclass
class ExampleBatch:
    """A step's examples as they are (truncated to seq_len), for packers that pack inside the step (trie)."""

    examples: list[Example]

    @property
    def num_rows(self) -> int:
        return len(self.examples)

    def num_tokens(self) -> int:
        return sum(len(e.ids) for e in self.examples)

    def num_targets(self) -> int:
        return sum(sum(e.targets[1:]) for e in self.examples)  # token 0 is predicted by nothing


class ExamplePacker:
    """Hands out whole examples; the trie step (train.train_step_trie) builds the prefix forest and packs it
    under packing.max_tokens. Its cursor is the stream's alone."""

    def __init__(self, stream: ExampleStream, seq_len: int):
        self.stream, self.seq_len = stream, seq_len

    def next_batch(self, rows: int) -> ExampleBatch:
        out = []
        for _ in range(rows):
            ex = self.stream.next()
            out.append(Example(ex.ids[: self.seq_len], ex.targets[: self.seq_len], ex.splittable))
        return ExampleBatch(out)

    def state_dict(self) -> dict:
        return {"stream": self.stream.state_dict(), "pending": None}

    def load_state_dict(self, state: dict) -> None:
        self.stream.load_state_dict(state["stream"])


def make_packer(
    mode: str, stream: ExampleStream, seq_len: int, tok: Tokenizer, max_tokens: int | None = None
) -> Packer:
    """The one place a packing mode is chosen: `flat` packs rows here (FlatPacker); `trie` hands whole examples
    to the step, which trains shared prefixes once with trie/ (the trie-packing engineer's code)."""
    if mode == "flat":
        return FlatPacker(stream, seq_len, tok.pad_id)
    if mode == "trie":
        return ExamplePacker(stream, seq_len)
    raise ValueError(f"packing.mode must be 'flat' or 'trie', got {mode!r}")


__all__ = [
    "IGNORE",
    "DataError",
    "Example",
    "ExampleStream",
    "Batch",
    "Packer",
    "FlatPacker",
    "ExampleBatch",
    "ExamplePacker",
    "load_stream",
    "load_source_rows",
    "make_packer",
    "midtrain_example",
    "sft_example",
]
