"""Did RL improve the reward? The demo's acceptance check, shared by the CI test and `make demo`:
the mean episode reward over the last tenth of the steps exceeds the first tenth's by at least `k` standard
errors of the difference (episode rewards within each tenth as the samples; Welch's standard error).

Over several independent runs (the CI test's seeds) the evidence is combined by Stouffer's method,
Z = Σ z_i / √n, and passes when Z ≥ k and no run's reward fell by k standard errors or more. A single run
of 30 steps on the tiny CPU model can fail to take off — when its starting policy solves almost nothing,
every group is all-fail and carries no gradient until a sample happens to pass — without anything being
broken; a collapse (lr too high) shows as a fall in that run and fails the check.

What the rise measures: the reward of the episodes the sampler drew. The difficulty-aware sampler rests
tasks whose groups were all-fail or all-pass, so after the first sweep the drawn mix leans to tasks of middle
difficulty; part of the rise from a weak start is that selection, not the policy. The eval stages before and
after RL (fixed tasks) measure the policy itself.
"""

from __future__ import annotations

import math
from typing import Any


def tenths(history: list[dict[str, Any]]) -> tuple[list[float], list[float]]:
    """Episode-level reward samples (each step's mean repeated by its episode count) of the first and last tenth."""
    n = max(1, len(history) // 10)

    def samples(hs: list[dict[str, Any]]) -> list[float]:
        out: list[float] = []
        for h in hs:
            m = h.get("metrics", {})
            out.extend([float(m.get("reward_mean", 0.0))] * max(1, int(h.get("episodes", m.get("episodes", 1)) or 1)))
        return out

    return samples(history[:n]), samples(history[-n:])


def reward_rise(history: list[dict[str, Any]], k: float = 3.0) -> dict[str, Any]:
    """{first, last, se, z, passed}: z = (last − first) / se.

    Each step's reward_mean is a mean over Bernoulli-like episode outcomes, so the per-episode variance is
    estimated as p(1 − p) from the tenth's mean (exact for 0/1 rewards), which does not need per-episode data."""
    a, b = tenths(history)
    ma, mb = sum(a) / len(a), sum(b) / len(b)

    def var(m: float) -> float:
        return max(m * (1 - m), 1e-12)

    se = math.sqrt(var(ma) / len(a) + var(mb) / len(b))
    z = (mb - ma) / se
    return {"first": ma, "last": mb, "se": se, "z": z, "passed": z >= k}


def combined(runs: list[dict[str, Any]], k: float = 3.0) -> dict[str, Any]:
    """{z, passed, runs} over independent runs' reward_rise results: Stouffer's Z = Σ z_i / √n; passed when
    Z ≥ k and no run's z is −k or below (a reward that fell)."""
    if not runs:
        raise ValueError("combined: no runs")
    z = sum(r["z"] for r in runs) / math.sqrt(len(runs))
    return {"z": z, "passed": z >= k and all(r["z"] > -k for r in runs), "runs": runs}


def main(argv: list[str] | None = None) -> int:
    """python -m trainflow_trainer.rl.evidence TRAINER_STATE.json [MORE.json ...] [--k 3]: prints the check
    as JSON (of one run, or the runs and their combination); exit 0 when the reward rose by at least k
    standard errors, 1 when it did not, 2 when a file has no history."""
    import argparse
    import json
    from pathlib import Path

    ap = argparse.ArgumentParser(prog="python -m trainflow_trainer.rl.evidence", description=main.__doc__)
    ap.add_argument(
        "states", nargs="+", metavar="state", help="an RL checkpoint's trainer_state.json (its `history` is read)"
    )
    ap.add_argument("--k", type=float, default=3.0)
    args = ap.parse_args(argv)
    runs = []
    for state in args.states:
        history = json.loads(Path(state).read_text()).get("history") or []
        if not history:
            print(json.dumps({"error": f"{state}: no `history` (is this an RL checkpoint's trainer_state.json?)"}))
            return 2
        rewards = [h["metrics"]["reward_mean"] for h in history]
        runs.append({**reward_rise(history, args.k), "steps": len(history), "rewards": rewards})
    result = runs[0] if len(runs) == 1 else combined(runs, args.k)
    print(json.dumps(result))
    return 0 if result["passed"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
