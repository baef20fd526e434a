"""Did RL improve the reward? The demo's acceptance check, shared by the CI test and `make demo`:
the mean episode reward over the last tenth of the steps exceeds the first tenth's by at least `k` standard
errors of the difference (episode rewards within each tenth as the samples; Welch's standard error).
"""

from __future__ import annotations

import math


def tenths(history: list[dict]) -> tuple[list[float], list[float]]:
    """Episode-level reward samples (each step's mean repeated by its episode count) of the first and last tenth."""
    n = max(1, len(history) // 10)

    def samples(hs):
        out = []
        for h in hs:
            m = h.get("metrics", {})
            out.extend([float(m.get("reward_mean", 0.0))] * max(1, int(h.get("episodes", m.get("episodes", 1)) or 1)))
        return out

    return samples(history[:n]), samples(history[-n:])


def reward_rise(history: list[dict], k: float = 3.0) -> dict:
    """{first, last, se, z, passed}: z = (last − first) / se.

    Each step's reward_mean is a mean over Bernoulli-like episode outcomes, so the per-episode variance is
    estimated as p(1 − p) from the tenth's mean (exact for 0/1 rewards), which does not need per-episode data."""
    a, b = tenths(history)
    ma, mb = sum(a) / len(a), sum(b) / len(b)
    var = lambda m: max(m * (1 - m), 1e-12)  # noqa: E731
    se = math.sqrt(var(ma) / len(a) + var(mb) / len(b))
    z = (mb - ma) / se
    return {"first": ma, "last": mb, "se": se, "z": z, "passed": z >= k}
