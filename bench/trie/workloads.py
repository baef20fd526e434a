"""Synthetic batches for the trie benchmark: (a) GRPO groups, (b) agentic multi-turn trees, (c) no sharing.

Token ids are random (the model does not care what they mean); the shapes are what matters: how much is
shared and where the forks are. Loss masks follow the real thing: prompts and tool outputs are context
(mask 0), sampled answers / assistant turns are trained (mask 1). Behaviour log-probs and advantages are
random but fixed by the seed, so flat and trie see identical batches.
"""

from __future__ import annotations

import numpy as np

from trainflow_trainer.trie import Trajectory


def _traj(rng, tokens: list[int], mask: list[float], advantage: float) -> Trajectory:
    n = len(tokens)
    return Trajectory(tokens=tokens, loss_mask=mask, logprobs=rng.normal(-8.3, 0.3, n), versions=np.zeros(n, int),
                      ref_logprobs=rng.normal(-8.3, 0.3, n), advantage=advantage)


def grpo(rng: np.random.Generator, vocab: int, groups: int, group_size: int = 8, prompt_len: int = 1024,
         answer_len: tuple[int, int] = (128, 512)) -> list[Trajectory]:
    """`groups` prompts, each with `group_size` sampled answers; advantages normalised within a group."""
    out = []
    for _ in range(groups):
        prompt = rng.integers(0, vocab, prompt_len).tolist()
        adv = rng.normal(size=group_size)
        adv = (adv - adv.mean()) / (adv.std() + 1e-6)
        firsts = rng.choice(vocab, size=group_size, replace=False)  # answers differ from their first token on,
        for a, first in zip(adv, firsts):  # so the group is exactly [prompt, answer 1..n] (prefix-grouper's layout)
            ans = [int(first)] + rng.integers(0, vocab, int(rng.integers(answer_len[0], answer_len[1] + 1)) - 1).tolist()
            out.append(_traj(rng, prompt + ans, [0.0] * prompt_len + [1.0] * len(ans), float(a)))
    return out


def agentic(rng: np.random.Generator, vocab: int, trees: int, tree_tokens: tuple[int, int] = (1000, 4000),
            system_len: int = 256, max_turns: int = 30,
            fork_p: tuple[float, float] = (0.6, 0.3)) -> list[Trajectory]:
    """Multi-turn agent trees, as tree-search rollouts make them: one long episode of turns (assistant call,
    tool output), and at several depths an alternative action is sampled and run for 1-3 turns to its own
    end (a fork; forks may fork again). Every root-to-leaf path is one trajectory. Each tree's unique token
    count is drawn from `tree_tokens` (the episode and its forks stop growing when it is spent)."""
    out = []
    for _ in range(trees):
        budget = int(rng.integers(tree_tokens[0], tree_tokens[1] + 1))
        used = system_len
        leaves: list[tuple[list[int], list[float]]] = []

        def turn() -> tuple[list[int], list[float]]:
            call = rng.integers(0, vocab, int(rng.integers(20, 60))).tolist()
            tool = rng.integers(0, vocab, int(rng.integers(30, 150))).tolist()
            return call + tool, [1.0] * len(call) + [0.0] * len(tool)

        def episode(toks: list[int], mask: list[float], turns: int, level: int) -> None:
            nonlocal used
            for i in range(turns):
                if i > 0 and level < 2 and rng.random() < fork_p[level]:
                    episode(toks, mask, int(rng.integers(1, 4)), level + 1)  # an alternative action here
                if used >= budget:
                    break
                t, m = turn()
                used += len(t)
                toks, mask = toks + t, mask + m
            ans = rng.integers(0, vocab, int(rng.integers(10, 40))).tolist()  # closing answer, trained
            used += len(ans)
            leaves.append((toks + ans, mask + [1.0] * len(ans)))

        episode(rng.integers(0, vocab, system_len).tolist(), [0.0] * system_len, max_turns, 0)
        adv = rng.normal(size=len(leaves))
        for (toks, mask), a in zip(leaves, adv):
            out.append(_traj(rng, toks, mask, float(a)))
    return out


def no_sharing(rng: np.random.Generator, vocab: int, n: int, length: tuple[int, int] = (256, 1024)) -> list[Trajectory]:
    """Independent sequences with distinct first tokens: nothing to share, the trie must cost nothing."""
    firsts = rng.permutation(vocab)[:n]
    out = []
    for f in firsts:
        L = int(rng.integers(length[0], length[1] + 1))
        toks = [int(f)] + rng.integers(0, vocab, L - 1).tolist()
        prompt = L // 4
        out.append(_traj(rng, toks, [0.0] * prompt + [1.0] * (L - prompt), float(rng.normal())))
    return out
