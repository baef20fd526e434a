"""bench/sampling: difficulty-aware against uniform task sampling on the demo tasks, same seeds, side by side.

For each arm, the RL stage runs from the same checkpoint with the same seeds; reported per arm:
no_signal_fraction (groups whose outcomes were all equal ÷ groups finished), steps_to_target (first step whose
mean reward over a trailing window reaches --target; null when never), final_reward (mean reward of the last
quarter of the steps). Run: `make bench-sampling` or
    .venv/bin/python bench/sampling/run.py --checkpoint DIR [--steps 16] [--seeds 0 1]  → bench/results/sampling.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "rl"))
from stage import REPO, rl_stage, run_rl, table  # noqa: E402


def steps_to_target(rewards: list[float], target: float, window: int = 3) -> int | None:
    for i in range(len(rewards)):
        w = rewards[max(0, i - window + 1) : i + 1]
        if len(w) == window and sum(w) / window >= target:
            return i + 1
    return None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--checkpoint", required=True, help="starting policy (the demo's SFT/RFT output)")
    ap.add_argument("--steps", type=int, default=16)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--target", type=float, default=0.3)
    args = ap.parse_args()
    arms = []
    for name in ("difficulty", "uniform"):
        runs = []
        for seed in args.seeds:
            hist, wall = run_rl(args.checkpoint, rl_stage(args.steps, seed, strategy=name), f"{name}-{seed}")
            rewards = [h["metrics"]["reward_mean"] for h in hist]
            runs.append(
                {
                    "seed": seed,
                    "rewards": rewards,
                    "wall_s": wall,
                    "no_signal_fraction": sum(h["metrics"]["no_signal_fraction"] for h in hist) / len(hist),
                    "steps_to_target": steps_to_target(rewards, args.target),
                    "final_reward": sum(rewards[-max(1, len(rewards) // 4) :]) / max(1, len(rewards) // 4),
                }
            )
        reached = [r["steps_to_target"] for r in runs if r["steps_to_target"] is not None]
        arms.append(
            {
                "name": name,
                "seeds": args.seeds,
                "runs": runs,
                "no_signal_fraction": sum(r["no_signal_fraction"] for r in runs) / len(runs),
                "steps_to_target": sum(reached) / len(reached) if len(reached) == len(runs) else None,
                "final_reward": sum(r["final_reward"] for r in runs) / len(runs),
            }
        )
    print(
        table(
            [{**a, "steps_to_target": str(a["steps_to_target"])} for a in arms],
            ["name", "no_signal_fraction", "steps_to_target", "final_reward"],
        )
    )
    out = REPO / "bench" / "results" / "sampling.json"
    out.write_text(
        json.dumps(
            {
                "bench": "sampling",
                "checkpoint": args.checkpoint,
                "target": args.target,
                "steps": args.steps,
                "arms": arms,
            },
            indent=2,
        )
        + "\n"
    )
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
