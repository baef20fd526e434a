"""Trajectories → prefix trees of token ids, serialised depth-first.

A trajectory is one branch: a token sequence with per-token training data (loss mask, behaviour log-probs,
policy versions, reference log-probs) and per-branch scalars (advantage, weight). Branches that start with
the same tokens share nodes: a node is (parent node, token id), so every unique prefix is stored once.
Branches whose first tokens differ land in different trees; a batch is a forest.

The forest is serialised depth-first (children in first-insertion order). For each node we keep:
- `tokens[i]`      its token id,
- `depth[i]`       its position id (the same position the token has in every branch through it),
- `parent[i]`      the serial index of its parent (-1 for a tree root),
- `subtree_end[i]` one past the last serial index of its subtree (DFS makes every subtree contiguous).
Tree attention follows: token i may see token j iff j ≤ i < subtree_end[j] (j is i or an ancestor of i).

Per-token training data stays per branch, never per node: two branches through one node may have different
loss masks or behaviour log-probs for it, and a node with several children has several next tokens. The map
`branch_index[b][t]` (branch b, position t → serial index) lets the loss gather what each branch needs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

# What a caller may pass per token: a list or a 1-D numpy array.
Ints = Sequence[int] | npt.NDArray[np.integer]
Floats = Sequence[float] | npt.NDArray[np.floating] | npt.NDArray[np.integer]


@dataclass
class Trajectory:
    """One branch. Arrays are aligned with `tokens`; entry t describes token t as a prediction target.

    loss_mask[t] > 0 trains the prediction of token t from tokens[:t] (so loss_mask[0] must be 0: nothing
    predicts the first token); it may be fractional (a per-token weight). logprobs[t] is the behaviour
    policy's log-prob of token t, versions[t] the policy version that sampled it, ref_logprobs[t] the
    reference model's log-prob (for the KL term), prox_logprobs[t] the proximal policy's (decoupled PPO; NaN
    or None: none, the loss uses the current log-prob). advantage and weight apply to every token of the branch.
    """

    tokens: Ints
    loss_mask: Floats | None = None  # None: train every token after the first
    logprobs: Floats | None = None
    versions: Ints | None = None
    ref_logprobs: Floats | None = None
    prox_logprobs: Floats | None = None
    advantage: float = 0.0
    weight: float = 1.0

    def validated(self, b: int) -> Branch:
        """Checks lengths and the mask; returns the branch as numpy arrays (errors name branch and field)."""
        toks = np.asarray(self.tokens, dtype=np.int64)
        n = len(toks)
        if toks.ndim != 1 or n == 0:
            raise ValueError(f"trajectory {b}: tokens must be a non-empty 1-D sequence of ids, got shape {toks.shape}")
        if (toks < 0).any():
            raise ValueError(f"trajectory {b}: tokens holds negative ids")

        def arr(name: str, value: Ints | Floats | None, dtype: type[np.generic], default: np.ndarray) -> np.ndarray:
            if value is None:
                return default
            a: np.ndarray = np.asarray(value, dtype=dtype)
            if a.shape != (n,):
                raise ValueError(f"trajectory {b}: {name} has shape {a.shape}, expected ({n},) like tokens")
            return a

        mask = arr("loss_mask", self.loss_mask, np.float64, np.r_[0.0, np.ones(n - 1)])
        if mask[0] != 0:
            raise ValueError(f"trajectory {b}: loss_mask[0] must be 0 (no token predicts the first one)")
        if (mask < 0).any():
            raise ValueError(f"trajectory {b}: loss_mask must be >= 0")
        return Branch(
            tokens=toks,
            loss_mask=mask,
            logprobs=arr("logprobs", self.logprobs, np.float64, np.zeros(n)),
            versions=arr("versions", self.versions, np.int64, np.zeros(n, dtype=np.int64)),
            ref_logprobs=arr("ref_logprobs", self.ref_logprobs, np.float64, np.zeros(n)),
            prox_logprobs=arr("prox_logprobs", self.prox_logprobs, np.float64, np.full(n, np.nan)),
            advantage=float(self.advantage),
            weight=float(self.weight),
        )


@dataclass(frozen=True)
class Branch:
    """A validated trajectory: every per-token field a numpy array as long as `tokens`, defaults filled in."""

    tokens: np.ndarray  # [n] int64
    loss_mask: np.ndarray  # [n] float64, loss_mask[0] == 0
    logprobs: np.ndarray  # [n] float64
    versions: np.ndarray  # [n] int64
    ref_logprobs: np.ndarray  # [n] float64
    prox_logprobs: np.ndarray  # [n] float64, NaN where none
    advantage: float
    weight: float


@dataclass
class Forest:
    """The depth-first serialisation of all trees of a batch (see module docstring)."""

    tokens: np.ndarray  # [N] int64
    depth: np.ndarray  # [N] int64, position ids
    parent: np.ndarray  # [N] int64, -1 for roots
    subtree_end: np.ndarray  # [N] int64
    trees: list[tuple[int, int]]  # serial range [start, end) of each tree, in order
    branch_index: list[np.ndarray]  # branch_index[b][t] = serial index of token t of branch b
    branches: list[Branch] = field(repr=False)  # the validated trajectories

    @property
    def unique_tokens(self) -> int:
        return len(self.tokens)

    @property
    def total_tokens(self) -> int:
        return sum(len(ix) for ix in self.branch_index)


def build_forest(trajectories: Sequence[Trajectory], share_prefixes: bool = True) -> Forest:
    """Merges the trajectories into prefix trees and serialises them depth-first.

    With share_prefixes=False every trajectory becomes its own chain-shaped tree: the flat layout, run
    through the same packer, attention and loss code (the baseline the trie is measured against).
    """
    if len(trajectories) == 0:
        raise ValueError("no trajectories to pack")
    branches = [t.validated(b) for b, t in enumerate(trajectories)]

    # Insert: node ids in creation order. children[n] maps token → child node; roots live under node -1.
    node_token: list[int] = []
    node_children: list[dict[int, int]] = []
    roots: dict[int, int] = {}
    root_list: list[int] = []  # roots in creation order (one per tree)
    paths: list[list[int]] = []
    for br in branches:
        path: list[int] = []
        level = roots if share_prefixes else {}
        for tok in br.tokens.tolist():
            child = level.get(tok)
            if child is None:
                child = len(node_token)
                node_token.append(tok)
                node_children.append({})
                level[tok] = child
                if not path:
                    root_list.append(child)
            path.append(child)
            level = node_children[child]
        paths.append(path)

    # Depth-first serialisation; dicts keep insertion order, so siblings come in first-seen order.
    n = len(node_token)
    serial = np.empty(n, dtype=np.int64)
    tokens = np.empty(n, dtype=np.int64)
    depth = np.empty(n, dtype=np.int64)
    parent = np.empty(n, dtype=np.int64)
    subtree_end = np.empty(n, dtype=np.int64)
    trees: list[tuple[int, int]] = []
    pos = 0
    for root in root_list:
        start = pos
        # stack of (node, parent serial, depth, exiting?)
        stack: list[tuple[int, int, int, bool]] = [(root, -1, 0, False)]
        while stack:
            node, par, d, exiting = stack.pop()
            if exiting:
                subtree_end[serial[node]] = pos
                continue
            i = pos
            pos += 1
            serial[node] = i
            tokens[i] = node_token[node]
            depth[i] = d
            parent[i] = par
            stack.append((node, par, d, True))
            for child in reversed(node_children[node].values()):
                stack.append((child, i, d + 1, False))
        trees.append((start, pos))
    branch_index = [serial[np.asarray(p, dtype=np.int64)] for p in paths]
    return Forest(tokens, depth, parent, subtree_end, trees, branch_index, branches)


def tree_mask(subtree_end: np.ndarray) -> np.ndarray:
    """Dense [N, N] bool reference: allowed[i, j] = j ≤ i < subtree_end[j]. Tests only (N² memory)."""
    n = len(subtree_end)
    i = np.arange(n)[:, None]
    j = np.arange(n)[None, :]
    return (j <= i) & (i < np.asarray(subtree_end)[None, :])
