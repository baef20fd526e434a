"""Did RL improve the reward? The demo's acceptance check, shared by the CI test and `make demo`:
the mean episode reward over the last tenth of the steps exceeds the first tenth's by at least `k` standard
errors of the difference (episode rewards within each tenth as the samples; Welch's standard error).
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


def main(argv: list[str] | None = None) -> int:
    """python -m trainflow_trainer.rl.evidence TRAINER_STATE.json [--k 3]: prints the check as JSON; exit 0
    when the reward rose by at least k standard errors, 1 when it did not."""
    import argparse
    import json
    from pathlib import Path

    ap = argparse.ArgumentParser(prog="python -m trainflow_trainer.rl.evidence", description=main.__doc__)
    ap.add_argument("state", help="an RL checkpoint's trainer_state.json (its `history` is read)")
    ap.add_argument("--k", type=float, default=3.0)
    args = ap.parse_args(argv)
    history = json.loads(Path(args.state).read_text()).get("history") or []
    if not history:
        print(json.dumps({"error": f"{args.state}: no `history` (is this an RL checkpoint's trainer_state.json?)"}))
        return 2
    result = reward_rise(history, args.k)
    print(json.dumps({**result, "steps": len(history), "rewards": [h["metrics"]["reward_mean"] for h in history]}))
    return 0 if result["passed"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
