"""Group records from the ledger → trie trajectories with group-normalised advantages.

A group record (src/dataplane/rollout.ts GroupRecord) holds one trajectory per agent session; each session's
conversation tree (src/dataplane/tree.ts: radix nodes with tokens, log-probs and policy versions) was rebuilt
by the proxy from the recorded token ids. Every root-to-leaf path of a tree is one training branch: tokens as
recorded (never re-tokenised), loss on generated tokens only (those with a recorded log-prob), behaviour
log-probs and versions as recorded. The trie packer merges what the branches share (the task prompt across a
group, earlier turns across a session), so it is computed once.

Advantages (GRPO): A_i = (r_i − mean(r)) / (std(r) + eps) within the group (centred only when
normalize_std is false), the same for every branch of session i.
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


def group_advantages(rewards: list[float], normalize_std: bool = True, eps: float = 1e-6) -> list[float]:
    r = np.asarray(rewards, dtype=np.float64)
    centred = r - r.mean()
    if not normalize_std:
        return centred.tolist()
    return (centred / (r.std() + eps)).tolist()


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
        out.append(Trajectory(
            tokens=toks, loss_mask=mask,
            logprobs=[lp if lp is not None else 0.0 for lp in lps],
            versions=[v if v is not None else -1 for v in vers],
            advantage=advantage,
        ))
    return out


def to_trajectories(groups: list[dict], trainer_version: int, normalize_std: bool = True,
                    mode: str = "rl") -> tuple[list[Trajectory], BatchStats]:
    """mode rl: every branch with its group advantage. mode sft: advantages unused (RFT's kept rollouts)."""
    trajs: list[Trajectory] = []
    rewards, stale, n_traj = [], [], 0
    for g in groups:
        rs = [float(t["reward"]) for t in g["trajectories"]]
        rewards.extend(rs)
        advs = group_advantages(rs, normalize_std) if mode == "rl" else [0.0] * len(rs)
        for t, a in zip(g["trajectories"], advs):
            n_traj += 1
            for br in branches(t, a):
                trajs.append(br)
                stale.extend(trainer_version - v for v, m in zip(br.versions, br.loss_mask) if m > 0)
    gen = int(sum(sum(1 for m in br.loss_mask if m > 0) for br in trajs))
    stats = BatchStats(
        groups=len(groups), trajectories=n_traj, branches=len(trajs), generated_tokens=gen,
        reward_mean=float(np.mean(rewards)) if rewards else 0.0,
        pass_rate=float(np.mean([r >= 1.0 for r in rewards])) if rewards else 0.0,
        staleness_mean=float(np.mean(stale)) if stale else 0.0,
    )
    return [t for t in trajs if any(m > 0 for m in t.loss_mask)], stats
