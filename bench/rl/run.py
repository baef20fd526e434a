"""bench/rl: the asynchronous RL loop against a synchronous one on the same CPU budget, side by side.

    async  rollout.max_staleness 1: agents keep generating while the trainer trains (partial rollout)
    sync   rollout.max_staleness 0: no group starts before the trainer has caught up (on-policy)

Measures samples (episodes) per second of wall time and the trainer's idle fraction (time blocked waiting for
a batch ÷ wall time of the loop). Run: `make bench-rl` or
    .venv/bin/python bench/rl/run.py --checkpoint DIR [--steps 8]   → bench/results/rl.json
"""

from __future__ import annotations

import argparse
import json

from stage import REPO, rl_stage, run_rl, table


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--checkpoint", required=True, help="starting policy (the demo's SFT/RFT output)")
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    modes = []
    for name, staleness in (("async", 1), ("sync", 0)):
        hist, wall = run_rl(args.checkpoint, rl_stage(args.steps, args.seed, max_staleness=staleness), name)
        episodes = sum(h["episodes"] for h in hist)
        wait = sum(h["metrics"]["wait_s"] for h in hist[1:])  # the first wait is start-up, the same in both
        loop = hist[-1]["time"] - hist[0]["time"]
        modes.append(
            {
                "name": name,
                "max_staleness": staleness,
                "steps": args.steps,
                "episodes": episodes,
                "samples_per_s": episodes / wall,
                "loop_samples_per_s": sum(h["episodes"] for h in hist[1:]) / loop,
                "trainer_idle_fraction": wait / loop,
                "wall_s": wall,
                "staleness_mean": sum(h["metrics"]["staleness_mean"] for h in hist) / len(hist),
                # the objective: importance ratio π_θ/μ, clip fractions, tokens dropped as stale
                **{
                    k: sum(h["metrics"].get(k, 0.0) for h in hist) / len(hist)
                    for k in ("ratio_mean", "clip_frac_low", "clip_frac_high")
                },
                "ratio_max": max(h["metrics"].get("ratio_max", 0.0) for h in hist),
                "dropped_stale_tokens": sum(h["metrics"].get("dropped_stale_tokens", 0.0) for h in hist),
            }
        )
    print(
        table(
            modes,
            [
                "name",
                "episodes",
                "samples_per_s",
                "loop_samples_per_s",
                "trainer_idle_fraction",
                "staleness_mean",
                "ratio_mean",
                "ratio_max",
                "clip_frac_low",
                "clip_frac_high",
                "dropped_stale_tokens",
                "wall_s",
            ],
        )
    )
    out = REPO / "bench" / "results" / "rl.json"
    out.write_text(json.dumps({"bench": "rl", "checkpoint": args.checkpoint, "modes": modes}, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
