"""Group records from the ledger → trie trajectories with group-normalised advantages.

A group record (src/dataplane/rollout.ts GroupRecord) holds one trajectory per agent session; each session's
conversation tree (src/dataplane/tree.ts: radix nodes with tokens, log-probs and policy versions) was rebuilt
by the proxy from the recorded token ids. Every root-to-leaf path of a tree is one training branch: tokens as
recorded (never re-tokenised), loss on generated tokens only (those with a recorded log-prob), behaviour
log-probs and versions as recorded. The trie packer merges what the branches share (the task prompt across a
group, earlier turns across a session), so it is computed once.

Advantages (GRPO): A_i = (r_i − mean(r)) / (std(r) + eps) within the group (centred only when
normalize_std is false), the same for every branch of session i. `algorithm.advantage_scaling` then scales
each group's advantages relative to the batch (the same formulas as src/sampling/advantages.ts, which the
config reference documents), clipped to [0.5, 2]:
  difficulty  s_g = (1 − p_g) / (1 − p̄): groups harder than the batch average count more;
  entropy     s_g = H_g / H̄, with H_g the mean negative log-prob of the group's sampled tokens (an unbiased
              estimate of the policy's token entropy from what was recorded): exploring groups count more.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..trie import Trajectory


def tree_paths(node: dict, prefix: tuple = ((), (), ())) -> list[tuple[list, list, list]]:
    """(tokens, logprobs, versions) of every root-to-leaf path of a recorded conversation tree."""
    toks = prefix[0] + tuple(node.get("tokens", []))
    lps = prefix[1] + tuple(node.get("logprobs", []))
    vers = prefix[2] + tuple(node.get("versions", []))
    children = node.get("children") or []
    if not children:
        return [(list(toks), list(lps), list(vers))] if toks else []
    out = []
    for c in children:
        out.extend(tree_paths(c, (toks, lps, vers)))
    return out


def group_advantages(
    rewards: list[float], normalize_std: bool = True, eps: float = 1e-6, tolerance: float = 0.0
) -> list[float]:
    """GRPO advantages of one group; all zero when the rewards are equal within `tolerance` (max − min), so
    float noise such as 1, 1, 1, 1 + 1e-7 never becomes advantages of ±1 (sampling.all_equal_tolerance, the
    sampler's filter, drops such groups; this covers filter_all_equal: false)."""
    r = np.asarray(rewards, dtype=np.float64)
    if len(r) == 0 or float(r.max() - r.min()) <= tolerance:
        return [0.0] * len(r)
    centred = r - r.mean()
    if not normalize_std:
        return centred.tolist()
    return (centred / (r.std() + eps)).tolist()


SCALINGS = ("none", "difficulty", "entropy")
MIN_SCALE, MAX_SCALE = 0.5, 2.0


def group_entropy(g: dict) -> float:
    """Mean negative log-prob of the group's generated tokens (every path of every session's tree)."""
    lps = [
        lp for t in g["trajectories"] for _, lp_path, _ in tree_paths(t["tree"]) for lp in lp_path[1:] if lp is not None
    ]
    return float(-np.mean(lps)) if lps else 0.0


def advantage_scales(groups: list[dict], mode: str = "none") -> list[float]:
    """Per-group factors for a batch: all 1 for `none`; see the module docstring for the others."""
    if mode not in SCALINGS:
        raise ValueError(f"advantage_scaling: expected one of {' | '.join(SCALINGS)}, got {mode!r}")
    if mode == "none" or not groups:
        return [1.0] * len(groups)
    if mode == "difficulty":
        rates = [float(np.mean([min(1.0, max(0.0, float(t["reward"]))) for t in g["trajectories"]])) for g in groups]
        mean_fail = 1.0 - float(np.mean(rates))
        if mean_fail <= 0:
            return [1.0] * len(groups)
        return [float(np.clip((1.0 - p) / mean_fail, MIN_SCALE, MAX_SCALE)) for p in rates]
    hs = [group_entropy(g) for g in groups]
    mean = float(np.mean(hs))
    if mean <= 0:
        return [1.0] * len(groups)
    return [float(np.clip(h / mean, MIN_SCALE, MAX_SCALE)) for h in hs]


@dataclass
class BatchStats:
    groups: int
    trajectories: int
    branches: int
    generated_tokens: int
    reward_mean: float
    pass_rate: float
    staleness_mean: float  # trainer version − the version that generated each token, averaged over tokens


def branches(t: dict, advantage: float) -> list[Trajectory]:
    out = []
    for toks, lps, vers in tree_paths(t["tree"]):
        mask = [0.0] + [1.0 if lp is not None else 0.0 for lp in lps[1:]]
        out.append(
            Trajectory(
                tokens=toks,
                loss_mask=mask,
                logprobs=[lp if lp is not None else 0.0 for lp in lps],
                versions=[v if v is not None else -1 for v in vers],
                advantage=advantage,
            )
        )
    return out


def to_trajectories(
    groups: list[dict],
    trainer_version: int,
    normalize_std: bool = True,
    mode: str = "rl",
    scaling: str = "none",
    tolerance: float = 0.0,
) -> tuple[list[Trajectory], BatchStats]:
    """mode rl: every branch with its (scaled) group advantage. mode sft: advantages unused (RFT's kept rollouts)."""
    trajs: list[Trajectory] = []
    rewards: list[float] = []
    stale: list[int] = []
    n_traj = 0
    scales = advantage_scales(groups, scaling) if mode == "rl" else [1.0] * len(groups)
    for g, scale in zip(groups, scales):
        rs = [float(t["reward"]) for t in g["trajectories"]]
        rewards.extend(rs)
        advs = (
            [a * scale for a in group_advantages(rs, normalize_std, tolerance=tolerance)]
            if mode == "rl"
            else [0.0] * len(rs)
        )
        for t, a in zip(g["trajectories"], advs):
            n_traj += 1
            for br in branches(t, a):
                trajs.append(br)
                stale.extend(trainer_version - v for v, m in zip(br.versions or (), br.loss_mask or ()) if m > 0)
    gen = sum(sum(1 for m in br.loss_mask or () if m > 0) for br in trajs)
    stats = BatchStats(
        groups=len(groups),
        trajectories=n_traj,
        branches=len(trajs),
        generated_tokens=gen,
        reward_mean=float(np.mean(rewards)) if rewards else 0.0,
        pass_rate=float(np.mean([r >= 1.0 for r in rewards])) if rewards else 0.0,
        staleness_mean=float(np.mean(stale)) if stale else 0.0,
    )
    return [t for t in trajs if any(m > 0 for m in t.loss_mask or ())], stats
