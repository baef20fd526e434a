"""The eval stage's metrics: pass@k by the unbiased estimator equals a direct count over every k-subset of the
samples, averaged over tasks; pass rates overall and per difficulty level; the stage's settings checks."""

from __future__ import annotations

import random
from itertools import combinations

import pytest

from trainflow_trainer.stages.eval import TaskResult, eval_settings, pass_at_k, summarise, task_results


def direct_pass_at_k(rewards: tuple[float, ...], k: int) -> float:
    """The fraction of all k-subsets of the samples that hold at least one passing sample (by enumeration)."""
    subsets = list(combinations(range(len(rewards)), k))
    return sum(1 for s in subsets if any(rewards[i] >= 1.0 for i in s)) / len(subsets)


def fixed_samples() -> list[TaskResult]:
    rng = random.Random(7)
    out = []
    for i in range(12):
        n = 6 + i % 3  # tasks may have different sample counts
        p = [0.0, 0.2, 0.5, 0.9][i % 4]
        out.append(TaskResult(f"t{i}", i % 3, tuple(float(rng.random() < p) for _ in range(n))))
    return out


@pytest.mark.parametrize("k", [1, 2, 3, 5, 6])
def test_pass_at_k_equals_the_direct_count_over_subsets(k: int) -> None:
    results = fixed_samples()
    assert any(0 < t.passed < len(t.rewards) for t in results)  # the estimator is not trivially 0 or 1
    got = summarise(results, [k])[f"pass@{k}"]
    want = sum(direct_pass_at_k(t.rewards, k) for t in results) / len(results)
    assert got == pytest.approx(want, abs=1e-12)


def test_pass_at_1_is_the_mean_per_task_pass_rate_and_edge_cases() -> None:
    assert pass_at_k(4, 0, 1) == 0.0
    assert pass_at_k(4, 4, 4) == 1.0
    assert pass_at_k(4, 1, 4) == 1.0  # n - c < k: some passing sample is always drawn
    assert pass_at_k(5, 2, 1) == pytest.approx(0.4)
    assert pass_at_k(5, 2, 2) == pytest.approx(1 - 3 / 10)
    with pytest.raises(ValueError):
        pass_at_k(3, 1, 4)


def test_pass_rate_overall_and_per_level() -> None:
    results = fixed_samples()
    m = summarise(results, [1])
    samples = [r for t in results for r in t.rewards]
    assert m["pass_rate"] == pytest.approx(sum(r >= 1.0 for r in samples) / len(samples))
    assert m["reward_mean"] == pytest.approx(sum(samples) / len(samples))
    assert m["tasks"] == 12 and m["samples"] == len(samples)
    for level in (0, 1, 2):
        at = [r for t in results if t.level == level for r in t.rewards]
        assert m[f"pass_rate_level_{level}"] == pytest.approx(sum(r >= 1.0 for r in at) / len(at))
    assert not any(k.startswith("pass_rate_level_3") for k in m)


def test_a_reward_below_one_does_not_pass() -> None:
    m = summarise([TaskResult("a", None, (0.5, 1.0)), TaskResult("b", None, (0.99, 0.0))], [1, 2])
    assert m["pass@1"] == pytest.approx(0.25)
    assert m["pass@2"] == pytest.approx(0.5)
    assert m["reward_mean"] == pytest.approx((0.5 + 1.0 + 0.99) / 4)
    assert not any(k.startswith("pass_rate_level") for k in m)


def test_task_results_from_collected_groups_keep_task_order_and_levels() -> None:
    groups = [
        {"task_id": "b", "trajectories": [{"reward": 1.0}, {"reward": 0.0}]},
        {"task_id": "a", "trajectories": [{"reward": 0}, {"reward": 0}]},
    ]
    got = task_results(groups, {"a": 0, "b": 3})
    assert [(t.task_id, t.level, t.rewards) for t in got] == [("a", 0, (0.0, 0.0)), ("b", 3, (1.0, 0.0))]


def test_eval_settings_are_the_resolved_block() -> None:
    from specs import lm_stage, rollout_stage, stage_configs

    # an eval stage scores a trained checkpoint: a training stage comes first
    _, given, default = stage_configs(
        lm_stage(), rollout_stage("eval", eval={"samples": 4, "pass_k": [1, 4]}), rollout_stage("eval")
    )
    assert eval_settings(given) == (4, [1, 4])
    assert eval_settings(default) == (4, [1])  # the schema's defaults (src/config/eval.ts)
