"""bench/serve: the CPU inference server under the demo's agent workload, three engine settings side by side.

    one-at-a-time   --max-batch 1 --no-prefix-reuse: every generation steps alone, every prompt is prefilled whole
    batched         generations waiting for a token step together (one batched decode)
    batched+prefix  batched, and prefills copy the longest cached prefix (previous turn, system prompt)

Each setting serves the same episodes: the reference agent (`python -m trainflow_trainer.agent`) on the same demo
tasks with the same concurrency, max turns and token budget; settings run interleaved, `--repeats` times each.
Reports episodes/s, generated tokens/s, the engine's mean batch and prefix reuse, and the speed-up over
one-at-a-time. Run: `make bench-serve BENCH_CHECKPOINT=DIR` or
    .venv/bin/python bench/serve/run.py --checkpoint DIR [--tasks 64] [--concurrency 8]   → bench/results/serve.json
The checkpoint should be one that uses tools (the demo's SFT output): a random model never calls a tool, so its
episodes are one turn each and prefix reuse has little to reuse.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
TRAINER = REPO / "trainer"
sys.path.insert(0, str(REPO / "bench" / "rl"))
from stage import table  # noqa: E402

SETTINGS = {
    "one-at-a-time": ["--max-batch", "1", "--no-prefix-reuse"],
    "batched": ["--no-prefix-reuse"],
    "batched+prefix": [],
}
ADMIN = "bench-admin"


def serve(checkpoint: str, tokenizer: str | None, extra: list[str]) -> tuple[subprocess.Popen, int]:
    cmd = [
        sys.executable,
        "-m",
        "trainflow_trainer.serve",
        "--checkpoint",
        checkpoint,
        "--port",
        "0",
        "--threads",
        "1",
        "--admin-token",
        ADMIN,
        *extra,
    ]
    if tokenizer:
        cmd += ["--tokenizer", tokenizer]
    proc = subprocess.Popen(cmd, cwd=TRAINER, stdout=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    if not line.startswith("TRAINFLOW_SERVE "):
        proc.kill()
        raise RuntimeError(f"the server did not start: {line!r}")
    return proc, json.loads(line.split(" ", 1)[1])["port"]


def engine_state(port: int) -> dict:
    req = urllib.request.Request(f"http://127.0.0.1:{port}/state", headers={"Authorization": f"Bearer {ADMIN}"})
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.loads(r.read())


def run_agent(port: int, args) -> tuple[float, list[dict]]:
    cmd = [
        sys.executable,
        "-m",
        "trainflow_trainer.agent",
        "--base-url",
        f"http://127.0.0.1:{port}/v1",
        "--tasks",
        "demo",
        "--count",
        str(args.tasks),
        "--seed",
        str(args.seed),
        "--concurrency",
        str(args.concurrency),
        "--max-turns",
        "3",
        "--max-tokens",
        "48",
        "--temperature",
        "1.0",
    ]
    t0 = time.perf_counter()
    out = subprocess.run(cmd, cwd=TRAINER, capture_output=True, text=True, timeout=3600, check=True).stdout
    wall = time.perf_counter() - t0
    episodes = [json.loads(line.split(" ", 1)[1]) for line in out.splitlines() if line.startswith("TRAINFLOW_EPISODE ")]
    return wall, episodes


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--checkpoint", required=True, help="a committed checkpoint folder (the demo's SFT output)")
    ap.add_argument("--tokenizer", help="tokenizer.json (default: the checkpoint's)")
    ap.add_argument("--tasks", type=int, default=64)
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    runs: dict[str, list[dict]] = {name: [] for name in SETTINGS}
    for rep in range(args.repeats):
        for name, extra in SETTINGS.items():
            proc, port = serve(args.checkpoint, args.tokenizer, extra)
            try:
                wall, episodes = run_agent(port, args)
                st = engine_state(port)
            finally:
                proc.terminate()
                proc.wait(30)
            errors = sum(e.get("stop") == "error" for e in episodes)
            if errors:
                raise RuntimeError(f"{name}: {errors} episodes ended in an error")
            tokens = sum(c.get("usage", {}).get("completion_tokens", 0) for e in episodes for c in e["completions"])
            runs[name].append(
                {
                    "wall_s": wall,
                    "episodes": len(episodes),
                    "completion_tokens": tokens,
                    "turns_mean": statistics.mean(e["turns"] for e in episodes),
                    "mean_batch": st["mean_batch"],
                    "prefix_reuse": st["prefix_reuse"],
                }
            )
            print(f"repeat {rep + 1} {name}: {len(episodes)} episodes in {wall:.1f} s", flush=True)
    rows = []
    base = statistics.median(r["wall_s"] for r in runs["one-at-a-time"])
    for name, rs in runs.items():
        wall = statistics.median(r["wall_s"] for r in rs)
        n = sum(r["episodes"] for r in rs)
        rows.append(
            {
                "name": name,
                "wall_s": wall,
                "episodes_per_s": n / sum(r["wall_s"] for r in rs),
                "tokens_per_s": sum(r["completion_tokens"] for r in rs) / sum(r["wall_s"] for r in rs),
                "turns_mean": statistics.mean(r["turns_mean"] for r in rs),
                "mean_batch": statistics.mean(r["mean_batch"] for r in rs),
                "prefix_reuse": statistics.mean(r["prefix_reuse"] for r in rs),
                "speedup": base / wall,
            }
        )
    print(
        table(
            rows,
            ["name", "wall_s", "episodes_per_s", "tokens_per_s", "turns_mean", "mean_batch", "prefix_reuse", "speedup"],
        )
    )
    out = REPO / "bench" / "results" / "serve.json"
    out.write_text(
        json.dumps(
            {
                "bench": "serve",
                "checkpoint": args.checkpoint,
                "tasks": args.tasks,
                "concurrency": args.concurrency,
                "repeats": args.repeats,
                "host": {"nproc": os.cpu_count(), "load_average_at_start": os.getloadavg()[0]},
                "settings": rows,
                "runs": runs,
            },
            indent=2,
        )
        + "\n"
    )
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
