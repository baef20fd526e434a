"""Agentic RL (`kind: rl`): GRPO/DAPO-family policy updates on trajectory batches from the data plane.

The job runs the rollout side as children (rl/rollouts.py: the inference server, and the data-plane driver
with the proxy, ledger, difficulty-aware sampler, rollout manager and agent workers) and is the rollout
manager's trainer. Per step:
  1. a batch of groups arrives (read by the manager from the ledger after the cursor; groups whose outcomes
     were all equal were filtered by the sampler, groups staler than rollout.max_staleness dropped);
  2. each session's recorded token tree becomes trie branches with the group-normalised advantage; the loss
     is PPO-clip on the recorded behaviour log-probs (clip-higher: algorithm.clip_high > clip_low;
     token-mean or seq-mean; optional k3 KL to the stage's initial policy), trie-packed by default;
  3. the new weights go to a folder the manager reloads the servers from (pause → reload → resume) while
     rollouts continue (asynchronous, staleness bounded by the manager's admission);
  4. every checkpoint.every steps one commit holds weights, optimizer, RNG, the ledger cursor, the sampler's
     statistics and the list of groups each step trained, written BEFORE the manager acknowledges the batch.
A retry resumes all three from the latest commit: groups after the committed cursor are trained (once), those
at or before it never again. On a new machine the ledger comes back from S3 (the commit names its generation).

On several ranks (torchrun) rank 0 alone runs the rollout side and the ledger; each batch is broadcast and
every rank trains its share of the packed micro-batches; the weights are gathered on every rank and written by
rank 0; the commit (cursor, sampler statistics, history) is rank 0's (rl/ranks.py).

Config: rollout {group_size, concurrency, batch_groups, max_turns, max_new_tokens, temperature, top_p,
max_staleness, session_idle_timeout, sandbox}, sampling {...src/sampling}, algorithm {name + the preset's
fields: src/config/algorithm.ts; rl/objective.py}, packing {mode: trie|flat, max_tokens}, train {steps, lr, ...},
checkpoint {every, keep_last}. The loop, checkpoints and resume are the stage runtime's (runtime.py); the KL
reference is fixed for the stage and recorded in every checkpoint (rl/reference.py).
"""

from __future__ import annotations

import contextlib
import shutil
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..contract import DriverBatch, StageConfig
from ..rl import reference
from ..rl.batch import BatchStats, to_trajectories
from ..rl.ledger_check import ledger_generation, ledger_size
from ..rl.objective import OBJECTIVE_METRICS, objective, update, with_logprobs
from ..rl.policy import SAMPLER_FILE, open_policy, sampler_files, write_weights
from ..rl.ranks import Coordinator
from ..rl.rollouts import Rollouts
from ..runtime import Extra, run_loop
from ..train import lr_at

if TYPE_CHECKING:
    from ..job import JobContext


def packing(stage: StageConfig) -> dict[str, Any]:
    """The stage's packing block as trie.forward_backward takes it (rft and rl stages always have one)."""
    assert stage.packing is not None, "the schema resolves a packing block for rft and rl stages"
    return stage.packing.model_dump()


def check_ledger(ctx: JobContext, ledger_dir: Path, cursor: int, generation: str | None) -> None:
    """The ledger lives in the job's scratch folder. If it is not the one the checkpoint's cursor refers to (a
    new machine: empty, or another generation), it is cleared and the data-plane driver restores the
    checkpoint's generation from S3 (records after the cursor, which the lost machine produced and shipped,
    are trained once; those at or before it never again), or, when S3 holds nothing usable, starts a new
    ledger (what the checkpoint trained stays trained, new rollouts follow). The driver says which happened."""
    if cursor >= 0 and (
        ledger_size(ledger_dir) <= cursor or (generation and ledger_generation(ledger_dir) not in (None, generation))
    ):
        ctx.log(
            f"trainflow: the ledger in {ledger_dir} is not the one the checkpoint's cursor {cursor} refers to "
            f"(generation {generation or 'unrecorded'}): restoring it from S3 if it is there"
        )
        shutil.rmtree(ledger_dir, ignore_errors=True)


def step_metrics(
    m: dict, msg: DriverBatch, bs: BatchStats, behaviour: list[float], times: dict[str, float]
) -> dict[str, float]:
    """The step's metrics (verl's names where they exist); times: lr, grad_norm, wait_s, train_s."""
    rm = msg.metrics
    return {
        "loss": float(m.get("loss", 0.0)),
        "reward_mean": float(rm.get("reward_mean", bs.reward_mean)),
        "pass_rate": float(rm.get("pass_rate", bs.pass_rate)),
        "batch_reward_mean": bs.reward_mean,
        # KL(behaviour || current) by the k1 estimator on the trained tokens, unless a reference KL is on
        "kl": float(m["kl"])
        if "kl" in m
        else float(np.mean(behaviour) - m.get("mean_logprob", 0.0))
        if behaviour
        else 0.0,
        # the sampled tokens' negative log-likelihood: an estimate of the policy's entropy
        "entropy": float(m["entropy"]) if "entropy" in m else -float(m.get("mean_logprob", 0.0)),
        "no_signal_fraction": float(rm.get("no_signal_fraction", 0.0)),
        "turns_mean": float(rm.get("turns_mean", 0.0)),
        "parallel_call_share": float(rm.get("parallel_call_share", 0.0)),
        "staleness_mean": bs.staleness_mean,
        "tokens_per_s": float(m.get("total_tokens", 0.0)) / times["train_s"] if times["train_s"] > 0 else 0.0,
        "unique_token_ratio": float(m["total_tokens"] / m["unique_tokens"]) if m.get("unique_tokens") else 1.0,
        "clip_frac": float(m.get("clip_frac", 0.0)),
        "grad_norm": times["grad_norm"],
        "groups": float(bs.groups),
        "dropped": float(len(msg.dropped)),
        "lr": times["lr"],
        "wait_s": times["wait_s"],
        "train_s": times["train_s"],
        "episodes": float(rm.get("episodes", 0)),
        "dropped_stale_tokens": float(msg.dropped_tokens),
        **{k: float(m[k]) for k in OBJECTIVE_METRICS if k in m},  # ratio, clip low/high, KL to reference
        # the fleet's engine counts while waiting vs training, restarts, failovers (src/rl/driver.ts)
        **{k: float(v) for k, v in rm.items() if k.startswith("engine")},
    }


def run(ctx: JobContext) -> None:
    spec, stage = ctx.spec, ctx.spec.stage
    obj = objective(stage)  # algorithm (resolved preset), rollout temperature/top_p: rl/objective.py
    pack = packing(stage)
    st = open_policy(ctx)
    if st is None:
        return
    tcfg, model, optimizer = st.tcfg, st.model, st.optimizer
    ref = reference.load(ctx, st, obj.loss.kl_coef, obj.kl_reference)  # fixed across retries
    history: list[dict] = list(st.state.get("history", []))
    ledger_dir = Path(spec.work_dir) / "ledger"
    cursor = int(st.state.get("cursor", -1))
    generation = st.state.get("ledger_generation")
    main = ctx.dist.is_main  # the coordinator: the rollout side, the ledger and the commit's extras are its
    if st.found:
        ctx.log(f"trainflow: rl resumes at ledger cursor {cursor}")
    if main:
        check_ledger(ctx, ledger_dir, cursor, generation)
    policy_root = Path(spec.work_dir) / "policy"
    weights = write_weights(st, policy_root / f"v-{st.step:06d}", main)
    sampler_stats: Any = None

    def step_fn(step: int) -> dict[str, float]:
        nonlocal cursor, sampler_stats
        t_wait = time.perf_counter()
        msg = co.next_message()  # rank 0 reads it from the driver; every rank gets it
        if not isinstance(msg, DriverBatch):
            raise RuntimeError(f"data plane: expected a batch, got {msg.type!r}")
        groups = [g.model_dump(mode="json", exclude_unset=True) for g in msg.groups]
        t0 = time.perf_counter()
        wait_s = t0 - t_wait  # the trainer idle, waiting for a batch (what asynchrony should shrink)
        trajs, bs = to_trajectories(
            groups, step, obj.normalize_std, scaling=obj.scaling, tolerance=obj.all_equal_tolerance
        )
        if ref is not None and trajs:
            with_logprobs(ref.model, trajs, obj.loss, pack["max_tokens"], "ref_logprobs")
        lr = lr_at(step, tcfg)
        m, grad_norm = update(model, optimizer, trajs, obj, pack, lr, tcfg.grad_clip, ctx.dist)
        times = {"lr": lr, "grad_norm": grad_norm, "wait_s": wait_s, "train_s": time.perf_counter() - t0}
        behaviour = [lp for t in trajs for lp, k in zip(t.logprobs or (), t.loss_mask or ()) if k > 0]
        metrics = step_metrics(m, msg, bs, behaviour, times)
        history.append(
            {
                "step": step + 1,
                "cursor": msg.cursor,
                "groups": [g.group_id for g in msg.groups],
                "dropped": msg.dropped,
                "episodes": int(metrics["episodes"]),
                "time": time.time(),
                "metrics": metrics,
            }
        )
        cursor, sampler_stats = msg.cursor, msg.sampler_stats
        ctx.log(
            f"trainflow: rl step {step + 1}/{tcfg.steps} reward {metrics['reward_mean']:.3f} "
            f"pass {metrics['pass_rate']:.2f} loss {metrics['loss']:+.4f} kl {metrics['kl']:+.4f} "
            f"no-signal {metrics['no_signal_fraction']:.2f} staleness {metrics['staleness_mean']:.2f}"
        )
        return metrics

    def extra() -> Extra:
        # committed before the manager acknowledges the batch: the cursor and the weights go together
        if not main:
            return Extra()  # runtime.save writes rank 0's
        state = {
            "cursor": cursor,
            "ledger_dir": str(ledger_dir),
            "ledger_generation": ledger_generation(ledger_dir),
            "history": history,
            **({reference.STATE_KEY: ref.state()} if ref is not None else {}),
        }
        return Extra(state, sampler_files(sampler_stats))

    def publish(final: bool) -> None:
        if not final:  # every rank gathers the weights (a collective under FSDP); rank 0 writes and tells
            co.trained(write_weights(st, policy_root / f"v-{st.step:06d}", main), st.step)
            if main:  # the server holds step-1 at most
                shutil.rmtree(policy_root / f"v-{st.step - 2:06d}", ignore_errors=True)

    rollouts = (
        Rollouts.start(
            ctx,
            weights,
            st.step,
            cursor,
            st.resumed_file(SAMPLER_FILE),
            "rl",
            steps=tcfg.steps - st.step,
            ledger_generation=generation,
        )
        if main
        else contextlib.nullcontext()
    )
    with rollouts as ro:
        co = Coordinator(ctx, ro)
        run_loop(ctx, st, step_fn, extra, publish)
    log_reward_rise(ctx, history)


def log_reward_rise(ctx: JobContext, history: list[dict]) -> None:
    """The demo's acceptance check, in the log of every RL stage."""
    if len(history) >= 2:
        from ..rl.evidence import reward_rise

        ev = reward_rise(history)
        ctx.log(
            f"trainflow: rl reward first tenth {ev['first']:.3f} → last tenth {ev['last']:.3f} "
            f"({ev['z']:+.1f} standard errors: {'a rise' if ev['passed'] else 'no clear rise'})"
        )
