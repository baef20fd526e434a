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
    return Trajectory(
        tokens=tokens,
        loss_mask=mask,
        logprobs=rng.normal(-8.3, 0.3, n),
        versions=np.zeros(n, int),
        ref_logprobs=rng.normal(-8.3, 0.3, n),
        advantage=advantage,
    )


def grpo(
    rng: np.random.Generator,
    vocab: int,
    groups: int,
    group_size: int = 8,
    prompt_len: int = 1024,
    answer_len: tuple[int, int] = (128, 512),
) -> list[Trajectory]:
    """`groups` prompts, each with `group_size` sampled answers; advantages normalised within a group."""
    out = []
    for _ in range(groups):
        prompt = rng.integers(0, vocab, prompt_len).tolist()
        adv = rng.normal(size=group_size)
        adv = (adv - adv.mean()) / (adv.std() + 1e-6)
        firsts = rng.choice(vocab, size=group_size, replace=False)  # answers differ from their first token on,
        for a, first in zip(adv, firsts):  # so the group is exactly [prompt, answer 1..n] (prefix-grouper's layout)
            ans = [int(first)] + rng.integers(
                0, vocab, int(rng.integers(answer_len[0], answer_len[1] + 1)) - 1
            ).tolist()
            out.append(_traj(rng, prompt + ans, [0.0] * prompt_len + [1.0] * len(ans), float(a)))
    return out


def agentic(
    rng: np.random.Generator,
    vocab: int,
    tasks: int,
    group: int = 8,
    roots: int = 2,
    system_len: int = 1024,
    task_len: tuple[int, int] = (128, 384),
    turns: tuple[int, int] = (3, 6),
    call_len: tuple[int, int] = (20, 60),
    tool_len: tuple[int, int] = (40, 160),
    answer_len: tuple[int, int] = (10, 40),
    fork_turns: tuple[int, int] = (1, 3),
) -> list[Trajectory]:
    """Agentic RL batches as tree-search rollouts make them (Tree-GRPO / partial-rollout branching).

    Every task gets a GRPO-style group of `group` rollouts (leaves). All episodes start with the same
    system prompt and tool definitions (`system_len` tokens: the same for every task, as in a real agent),
    then the task statement (`task_len`). `roots` rollouts are sampled from scratch: `turns` turns of
    (assistant tool call `call_len`, trained; tool output `tool_len`, context), then a closing answer
    (`answer_len`, trained). The rest of the group comes from forks at several depths: pick a rollout of the
    group and a turn boundary in it after its first turn (fresh samples from the prompt are the `roots`),
    re-sample the action there and run `fork_turns` new turns plus a closing answer. Forks of forks happen (a
    fork's leaf can be picked).
    Each leaf is one trajectory with its own advantage. With the defaults a task's tree holds ~3-4k unique
    tokens below the shared system prompt, and its rollouts are ~1.4k-2.5k tokens long.
    """
    system = rng.integers(0, vocab, system_len).tolist()
    out = []
    for _ in range(tasks):
        task = rng.integers(0, vocab, int(rng.integers(task_len[0], task_len[1] + 1))).tolist()
        prompt, prompt_mask = system + task, [0.0] * (system_len + len(task))

        def span(lo_hi: tuple[int, int]) -> list[int]:
            return rng.integers(0, vocab, int(rng.integers(lo_hi[0], lo_hi[1] + 1))).tolist()

        def run(toks: list[int], mask: list[float], bounds: list[int], n_turns: int):
            """Continues an episode by n_turns turns and a closing answer; bounds = turn start offsets."""
            bounds = list(bounds)
            for _ in range(n_turns):
                bounds.append(len(toks))
                call, tool = span(call_len), span(tool_len)
                toks, mask = toks + call + tool, mask + [1.0] * len(call) + [0.0] * len(tool)
            bounds.append(len(toks))
            ans = span(answer_len)
            return toks + ans, mask + [1.0] * len(ans), bounds

        leaves = [run(prompt, prompt_mask, [], int(rng.integers(turns[0], turns[1] + 1))) for _ in range(roots)]
        while len(leaves) < group:
            toks, mask, bounds = leaves[int(rng.integers(len(leaves)))]
            k = int(rng.integers(1, len(bounds)))  # fork at turn boundary k ≥ 1: the first action is shared
            cut = bounds[k]
            leaves.append(run(toks[:cut], mask[:cut], bounds[:k], int(rng.integers(fork_turns[0], fork_turns[1] + 1))))
        adv = rng.normal(size=len(leaves))
        out += [_traj(rng, toks, mask, float(a)) for (toks, mask, _), a in zip(leaves, adv)]
    return out


AGENTIC_PARAMS = dict(
    group=8,
    roots=2,
    system_len=1024,
    task_len=(128, 384),
    turns=(3, 6),
    call_len=(20, 60),
    tool_len=(40, 160),
    answer_len=(10, 40),
    fork_turns=(1, 3),
)  # agentic()'s defaults, for the JSON


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
