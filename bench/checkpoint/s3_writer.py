"""DCP training state to S3: local staging then upload (what the trainer does) against s3torchconnector's DCP
writer and reader straight to S3, side by side on the local stack's MinIO.

    bash infra/dev/with-stack.sh .venv/bin/python bench/checkpoint/s3_writer.py [--hidden 256 --layers 4]

Needs `pip install "s3torchconnector[dcp]==1.5.0"` (an evaluation only: not in trainer/requirements.txt).
One process, a model + AdamW state of the given width; every figure is the median of --repeats runs.

save  staged   dcp.save to a local folder, then sha256 + upload of every file (what COMMIT.json needs)
      direct   dcp.save with S3StorageWriter; then reading every object back for its sha256, without which the
               commit protocol has nothing to verify (s3torchconnector returns no checksums)
load  staged   download + verify every file against its sha256, then dcp.load from the local folder
      direct   dcp.load with S3StorageReader (nothing verified)

Prints a table and writes bench/results/checkpoint.json.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "trainer"))

import torch  # noqa: E402
import torch.distributed.checkpoint as dcp  # noqa: E402

from trainflow_trainer.checkpoint import sha256_file, upload_files  # noqa: E402
from trainflow_trainer.model import Transformer, preset  # noqa: E402
from trainflow_trainer.storage import Storage, StorageConfig, join, split_s3  # noqa: E402
from trainflow_trainer.train_state import load_train_state, save_train_state  # noqa: E402

ENDPOINT = os.environ.get("TRAINFLOW_S3_ENDPOINT", "http://127.0.0.1:9000")
BUCKET = os.environ.get("TRAINFLOW_BUCKET", "trainflow")
REGION = os.environ.get("AWS_REGION", "us-east-1")


def model_and_optimizer(hidden: int, layers: int) -> tuple[Transformer, torch.optim.AdamW]:
    torch.manual_seed(0)
    cfg = preset(
        "tiny",
        vocab_size=2048,
        hidden_size=hidden,
        intermediate_size=hidden * 3,
        num_hidden_layers=layers,
        num_attention_heads=max(1, hidden // 64),
        num_key_value_heads=max(1, hidden // 128),
    )
    model = Transformer(cfg)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, foreach=False)
    model(torch.randint(0, 2048, (2, 32))).float().mean().backward()
    opt.step()
    opt.zero_grad()
    return model, opt


def timed(fn: Any) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def staged_save(model: Transformer, opt: torch.optim.Optimizer, storage: Storage, uri: str, tmp: Path) -> float:
    local = tmp / "staging"

    def run() -> None:
        shutil.rmtree(local, ignore_errors=True)
        save_train_state(model, opt, local, distributed=False, durable=False)  # as runtime.save stages
        upload_files(local, uri, storage)

    return timed(run)


def s3_hashes(storage: Storage, uri: str) -> dict[str, str]:
    bucket, key = split_s3(uri)
    out = {}
    for rel in storage.list_files(uri):
        body = storage.s3.get_object(Bucket=bucket, Key=f"{key.rstrip('/')}/{rel}")["Body"]
        out[rel] = hashlib.sha256(body.read()).hexdigest()
    return out


def direct_save(model: Transformer, opt: torch.optim.Optimizer, storage: Storage, uri: str) -> tuple[float, float]:
    from s3torchconnector import S3ClientConfig
    from s3torchconnector.dcp import S3StorageWriter
    from torch.distributed.checkpoint.state_dict import get_state_dict

    def run() -> None:
        msd, osd = get_state_dict(model, opt)
        writer = S3StorageWriter(REGION, uri, s3client_config=S3ClientConfig(force_path_style=True))
        dcp.save({"model": msd, "optimizer": osd}, storage_writer=writer, no_dist=True)

    return timed(run), timed(lambda: s3_hashes(storage, uri))


def staged_load(model: Transformer, opt: torch.optim.Optimizer, storage: Storage, uri: str, tmp: Path) -> float:
    def run() -> None:
        local = tmp / "fetched"
        shutil.rmtree(local, ignore_errors=True)
        for rel in storage.list_files(uri):
            storage.download_file(join(uri, rel), local / rel)
            sha256_file(local / rel)
        load_train_state(model, opt, local, distributed=False)

    return timed(run)


def direct_load(model: Transformer, opt: torch.optim.Optimizer, uri: str) -> float:
    from s3torchconnector import S3ClientConfig
    from s3torchconnector.dcp import S3StorageReader
    from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

    def run() -> None:
        msd, osd = get_state_dict(model, opt)
        state = {"model": msd, "optimizer": osd}
        reader = S3StorageReader(REGION, uri, s3client_config=S3ClientConfig(force_path_style=True))
        dcp.load(state, storage_reader=reader, no_dist=True)
        set_state_dict(model, opt, model_state_dict=state["model"], optim_state_dict=state["optimizer"])

    return timed(run)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    os.environ.setdefault("AWS_ENDPOINT_URL", ENDPOINT)  # s3torchconnector's client reads its endpoint from here
    storage = Storage(StorageConfig(endpoint=ENDPOINT, region=REGION, force_path_style=True))
    model, opt = model_and_optimizer(args.hidden, args.layers)
    root = f"s3://{BUCKET}/bench/checkpoint-{uuid.uuid4().hex[:8]}"
    names = ("save_staged", "save_direct", "hash_direct", "load_staged", "load_direct")
    rows: dict[str, list[float]] = {k: [] for k in names}
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for i in range(args.repeats):
                a, b = join(root, f"staged-{i}"), join(root, f"direct-{i}")
                rows["save_staged"].append(staged_save(model, opt, storage, a, Path(tmp)))
                save, hashing = direct_save(model, opt, storage, b)
                rows["save_direct"].append(save)
                rows["hash_direct"].append(hashing)
                rows["load_staged"].append(staged_load(model, opt, storage, a, Path(tmp)))
                rows["load_direct"].append(direct_load(model, opt, b))
            size = sum(p.stat().st_size for p in (Path(tmp) / "staging").rglob("*") if p.is_file())
    finally:
        storage.delete_prefix(root)
    med = {k: statistics.median(v) for k, v in rows.items()}
    result = {
        "state_bytes": size,
        "hidden": args.hidden,
        "layers": args.layers,
        "repeats": args.repeats,
        "median_s": med,
        "save_direct_over_staged": med["save_direct"] / med["save_staged"],
        "save_direct_with_hashes_over_staged": (med["save_direct"] + med["hash_direct"]) / med["save_staged"],
        "load_direct_over_staged": med["load_direct"] / med["load_staged"],
        "endpoint": "MinIO (local stack)",
        "torch": torch.__version__,
        "load_avg_1m": os.getloadavg()[0],
    }
    mb = size / 1e6
    print(f"DCP training state {mb:.1f} MB, one process, median of {args.repeats}")
    print(f"{'':26}{'staged (trainer)':>18}{'s3torchconnector':>18}")
    print(f"{'save (s)':26}{med['save_staged']:>18.3f}{med['save_direct']:>18.3f}")
    print(f"{'  + sha256 for COMMIT.json':26}{'(included)':>18}{med['hash_direct']:>18.3f}")
    print(f"{'load (s)':26}{med['load_staged']:>18.3f}{med['load_direct']:>18.3f}")
    out = ROOT / "bench" / "results" / "checkpoint.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
