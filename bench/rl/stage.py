"""Runs the RL stage as a real job (inference server, data plane, agent workers, trainer) from a starting
checkpoint and returns its per-step history; shared by bench/rl and bench/sampling.

The starting checkpoint should be one that solves some demo tasks (the demo pipeline's SFT or RFT output):
`--checkpoint DIR` (a committed step-NNNNNN folder or an HF folder with tokenizer.json).
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
TRAINER = REPO / "trainer"


def rl_stage(
    steps: int,
    seed: int,
    strategy: str = "difficulty",
    max_staleness: int = 1,
    group_size: int = 8,
    batch_groups: int = 4,
    concurrency: int = 8,
    tasks: int = 64,
    lr: float = 5e-4,
) -> dict:
    return {
        "name": "rl",
        "kind": "rl",
        "tasks": {"family": "demo", "count": tasks, "seed": seed},
        "rollout": {
            "group_size": group_size,
            "concurrency": concurrency,
            "batch_groups": batch_groups,
            "max_turns": 3,
            "max_new_tokens": 48,
            "temperature": 1.0,
            "top_p": 1.0,
            "max_staleness": max_staleness,
        },
        "sampling": {"strategy": strategy, "all_equal_tolerance": 1e-6},
        # a resolved `algorithm: {name: dapo}` (src/config/algorithm.ts): job specs carry every field
        "algorithm": {
            "name": "dapo",
            "clip_low": 0.2,
            "clip_high": 0.28,
            "loss_agg": "token-mean",
            "kl_coef": 0.0,
            "entropy_coef": 0.0,
            "normalize_std": True,
            "advantage_scaling": "none",
            "decoupled": False,
            "behav_weight_cap": None,
            "minibatches": 1,
        },
        "packing": {"mode": "trie", "max_tokens": 4096},
        "train": {"steps": steps, "lr": lr, "seed": seed},
        "checkpoint": {"every": 0},
    }


def run_rl(checkpoint: str, stage: dict, label: str, timeout: float = 3600) -> tuple[list[dict], float]:
    """(history of the final checkpoint, wall seconds)."""
    root = Path(tempfile.mkdtemp(prefix=f"tf-bench-rl-{label}-"))
    spec = {
        "protocol": 1,
        "pipeline_id": f"bench-{label}",
        "run_id": "bench",
        "stage_index": 0,
        "attempt": 1,
        "stage": stage,
        "model": {"dtype": "fp32"},
        "input_checkpoint": checkpoint,
        "output_prefix": str(root / "out" / "rl"),
        "resume": False,
        "status_uri": None,
        "storage": {},
        "work_dir": str(root / "work"),
    }
    (root / "spec.json").write_text(json.dumps(spec))
    t0 = time.perf_counter()
    r = subprocess.run(
        [sys.executable, "-m", "trainflow_trainer.job", "--spec", str(root / "spec.json")],
        cwd=TRAINER,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        timeout=timeout,
    )
    wall = time.perf_counter() - t0
    if r.returncode != 0:
        raise RuntimeError(f"{label}: the RL job failed ({r.returncode}):\n{r.stderr[-3000:]}")
    final = root / "out" / "rl" / f"step-{stage['train']['steps']:06d}" / "trainer_state.json"
    return json.loads(final.read_text())["history"], wall


def table(rows: list[dict], cols: list[str]) -> str:
    w = [max(len(c), *(len(f"{r[c]:.4g}" if isinstance(r[c], float) else str(r[c])) for r in rows)) for c in cols]
    line = lambda vals: "  ".join(v.rjust(n) for v, n in zip(vals, w))  # noqa: E731
    out = [line(cols)]
    for r in rows:
        out.append(line([f"{r[c]:.4g}" if isinstance(r[c], float) else str(r[c]) for c in cols]))
    return "\n".join(out)
