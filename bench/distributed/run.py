"""Multi-rank scaling on CPU: each row (midtrain flat, sft flat, sft trie) trained by 1 process and by 2 FSDP2
ranks over gloo (torchrun), side by side, one thread per rank.

    make bench-distributed      (= .venv/bin/python bench/distributed/run.py [--steps N] [--smoke])

Writes bench/results/distributed.json: `rows`, each {stage, ranks, packing, tokens_per_s, scaling_efficiency}
with scaling_efficiency = tokens/s at N ranks ÷ (N × tokens/s at 1 rank). The bound: this machine has 2 cores
(shared with whatever else runs), so 2 ranks at one thread each can at best double one rank's throughput
(efficiency 1.0); FSDP2's all-gathers and reduce-scatters over gloo, the barriers and the load of other
processes take it below that. The tiny model makes communication a large share of each step.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "trainer"))

from trainflow_trainer.demo_data import generate  # noqa: E402

WORKER = str(Path(__file__).with_name("worker.py"))


def run(ranks: int, data: Path, out: Path, args: list[str]) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TRAINFLOW_DEVICE": "cpu"}
    cmd = [sys.executable, WORKER, "--data", str(data), "--out", str(out), *args]
    if ranks > 1:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={ranks}",
               "--master_addr=127.0.0.1", f"--master_port={port}", *cmd[1:]]  # fmt: skip
    subprocess.run(cmd, env=env, check=True, timeout=1800)
    return json.loads(out.read_text())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--smoke", action="store_true", help="2 steps of a small batch (checks it runs)")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "distributed.json"))
    a = ap.parse_args()
    worker_args = ["--steps", "2", "--batch-size", "4", "--micro-batch-size", "2", "--seq-len", "128"]
    if not a.smoke:
        worker_args = ["--steps", str(a.steps)]
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        generate(data, seed=0, scale=0.2)
        one = run(1, data, Path(tmp) / "one.json", worker_args)
        two = run(2, data, Path(tmp) / "two.json", worker_args)
    rows = []
    print(f"{'stage':<10}{'packing':<9}{'ranks':>6}{'tokens/s':>12}{'efficiency':>12}")
    for name, r1 in one["rows"].items():
        stage, packing = name.split("-")
        for ranks, r in ((1, r1), (2, two["rows"][name])):
            eff = r["tokens_per_s"] / (ranks * r1["tokens_per_s"])
            rows.append(
                {
                    "stage": stage,
                    "ranks": ranks,
                    "packing": packing,
                    "tokens_per_s": round(r["tokens_per_s"], 1),
                    "scaling_efficiency": round(eff, 3),
                    "step_s": round(r["step_s"], 3),
                }
            )
            print(f"{stage:<10}{packing:<9}{ranks:>6}{r['tokens_per_s']:>12.1f}{eff:>12.3f}")
    out = {
        "rows": rows,
        "bound": "2 CPU cores, shared: 2 ranks x 1 thread at best double 1 rank x 1 thread (efficiency 1.0)",
        "setup": {
            "preset": "tiny",
            "worker_args": worker_args,
            "backend": "gloo",
            "sharding": "FSDP2 fully_shard per block + root",
            "threads_per_rank": 1,
            "cpus": os.cpu_count(),
            "machine": platform.machine(),
            "smoke": a.smoke,
            "load_average_1m_at_end": round(os.getloadavg()[0], 2),
        },
    }
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
