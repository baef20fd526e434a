"""Trie packing vs flat packing on CPU: step time (forward + backward + AdamW step), same batches, one run.

    cd trainer && ../.venv/bin/python ../bench/trie/run.py        (make bench-trie)

Workloads (the issue's; parameters in workloads.py and in the JSON): (a) grpo: a group of 8 answers (128-512
tokens) to a 1024-token prompt; (b) agentic: 2 tasks × a group of 8 tree-search rollouts (multi-turn: tool call,
tool output, ...; forks at several depths) under one shared system prompt; (c) none: independent sequences.
Flat = every trajectory packed on its own into the same token budget (varlen packing: no padding, one causal
attention call per sequence); trie = shared prefixes merged. Model: the `tiny` preset, float32.
Writes bench/results/trie.json: {"workloads": [{name, total_tokens, unique_tokens, token_ratio, flat_step_s,
trie_step_s, speedup, efficiency = speedup / token_ratio, flop_ratio, efficiency_vs_flops = speedup / flop_ratio,
fsdp2: the same workload on 2 FSDP2 ranks (gloo, torchrun; packed micro-batches dealt to ranks by token count)},
...], ...}. --no-fsdp2 skips the 2-rank rows.

The machine is shared (2 cores, other jobs running), so: the script lowers its own priority (nice +5), steps
alternate flat/trie, medians are reported, one torch thread by default (see --threads), and every step's
process CPU time is recorded next to its wall time (CPU time is what other processes' load disturbs least;
the `*_cpu_s` fields). `flop_ratio` is the matmul-FLOP ratio flat/trie: the real ceiling for a small model
(see bench/trie/README.md).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path[:0] = [str(ROOT / "trainer"), str(HERE)]

import workloads  # noqa: E402

from trainflow_trainer.model import ModelConfig, Transformer, preset  # noqa: E402
from trainflow_trainer.trie import LossSpec, build_forest, flat_forward_backward, packed_forward_backward  # noqa: E402
from trainflow_trainer.trie.packer import pack  # noqa: E402

WORKLOADS = {
    # name: (builder, loss) — sizes chosen so the whole bench stays within a few minutes on 2 cores; the RL
    # losses are the grpo and dapo presets of src/config/algorithm.ts, spelled out (from_config knows sft/rft)
    "grpo": (
        lambda rng, v: workloads.grpo(rng, v, groups=1),
        LossSpec(kind="ppo", aggregation="seq_mean", eps_low=0.2, eps_high=0.2),
    ),
    "agentic": (
        lambda rng, v: workloads.agentic(rng, v, tasks=2),
        LossSpec(kind="ppo", aggregation="token_mean", eps_low=0.2, eps_high=0.28),
    ),
    "none": (lambda rng, v: workloads.no_sharing(rng, v, n=10), LossSpec.from_config("sft")),
}

# A wider model for the optional second row set (--wide): 4× tiny's width, 2 layers. Per token its linears
# cost 15.7 MFLOP against 4 096 FLOP per attended key, so attention overtakes them only past depth ~3 800 and
# the FLOP ceiling moves toward the token ratio. Not a trainer preset: the trainer's `tiny` stays as it is.
WIDE = ModelConfig(
    vocab_size=4096,
    hidden_size=512,
    intermediate_size=2048,
    num_hidden_layers=2,
    num_attention_heads=8,
    num_key_value_heads=4,
    max_position_embeddings=4096,
)

PARAMS = {  # what each workload is, for the JSON (the builders' arguments)
    "grpo": {"groups": 1, "group_size": 8, "prompt_len": 1024, "answer_len": [128, 512], "loss": "grpo"},
    "agentic": {
        "tasks": 2,
        **workloads.AGENTIC_PARAMS,
        "loss": "dapo",
        "shape": "per task a group of `group` leaves: `roots` fresh rollouts, the rest forks of the group's "
        "rollouts at random turn boundaries after the first turn; one system prompt for all tasks",
    },
    "none": {"n": 10, "length": [256, 1024], "loss": "sft"},
}


def flop_estimate(cfg, batch, share: bool, max_tokens: int) -> float:
    """Matmul FLOPs of one training step (forward + backward ≈ 3× forward) as this code runs it: linear
    layers per packed token, attention per (query, visible key) pair, LM head per row that predicts
    something. Attention over a shared prompt and the LM head on unshared answers do not shrink with
    sharing, so this ratio, not the token ratio, is the real ceiling for a small model."""
    from trainflow_trainer.trie.attention import segments_from_parents

    h, kv = cfg.hidden_size, cfg.num_key_value_heads * cfg.head_size
    per_token = 2 * cfg.num_hidden_layers * (2 * h * h + 2 * h * kv + 3 * h * cfg.intermediate_size)
    per_pair = 2 * cfg.num_hidden_layers * 2 * h  # q·k and p·v, all heads
    per_head_row = 2 * h * cfg.vocab_size
    fwd = 0.0
    for mb in pack(build_forest(batch, share_prefixes=share), max_tokens):
        pairs = sum(
            (b - a) * sum(e - s for s, e in anc) + (b - a) * (b - a + 1) / 2
            for a, b, anc in segments_from_parents(mb.parent)
        )
        fwd += len(mb) * per_token + pairs * per_pair + len(set(mb.entries.row.tolist())) * per_head_row
    return 3 * fwd


def step_time(model, opt, fn, batch, spec, max_tokens) -> tuple[float, float]:
    """(wall seconds, process CPU seconds) of one optimizer step."""
    t0, c0 = time.perf_counter(), time.process_time()
    opt.zero_grad(set_to_none=True)
    fn(model, batch, spec, max_tokens)
    opt.step()
    return time.perf_counter() - t0, time.process_time() - c0


class PrefixGrouperMask:
    """prefix-grouper (PyPI) as an attention backend: its grouped layout [prefix, suffix 1, ..., suffix n] is
    exactly our depth-first serialisation of a GRPO group, so only the attention differs from the trie path."""

    def __init__(self, group_info: list[list[int]]):
        from prefix_grouper import PrefixGrouper

        self.pg = PrefixGrouper(group_info, device="cpu")

    @staticmethod
    def _attn(q, k, v, key_padding, scale):
        # prefix-grouper hands over a key padding mask [b, Tk]; causality is ours to add, lower-right aligned
        # (suffix queries come after all prefix keys). It expects [b, T, heads, dim] back.
        tq, tk = q.shape[2], k.shape[2]
        allowed = key_padding[:, None, None, :].bool() & torch.ones(tq, tk, dtype=torch.bool).tril(tk - tq)
        out = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=allowed, scale=scale)
        return out.transpose(1, 2)

    def attend(self, q, k, v, scale):
        from trainflow_trainer.attention import expand_kv

        k, v = expand_kv(q, k, v)
        return self.pg.forward(self._attn, q, k, v, scale=scale).transpose(1, 2)


def prefix_grouper_factory(batch):
    """MicroBatch -> PrefixGrouperMask for one GRPO group per micro-batch, or None when not installed."""
    try:
        import prefix_grouper  # noqa: F401
    except ImportError:
        return None
    prompt = next(i for i, m in enumerate(batch[0].loss_mask) if m > 0)  # answers are the trained tokens
    info = [[prompt, *[len(t.tokens) - prompt for t in batch]]]

    def make(mb):
        if len(mb) != sum(info[0]):
            raise ValueError("prefix-grouper column: expected one whole GRPO group per micro-batch")
        return PrefixGrouperMask(info)

    return make


def measure(cfg, name: str, repeats: int, max_tokens: int, with_pg: bool = True) -> dict:
    """One workload on one model config: warm-up, then `repeats` interleaved flat/trie steps; the JSON row."""
    build, spec = WORKLOADS[name]
    batch = build(np.random.default_rng(0), cfg.vocab_size)
    forest = build_forest(batch)
    total, unique = forest.total_tokens, forest.unique_tokens
    torch.manual_seed(0)
    model = Transformer(cfg)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5)
    times: dict[str, list[tuple[float, float]]] = {"flat": [], "trie": []}
    fns = {"flat": flat_forward_backward, "trie": packed_forward_backward}
    for mode in fns:  # warm-up (allocator, first-call costs)
        step_time(model, opt, fns[mode], batch, spec, max_tokens)
    for _ in range(repeats):  # interleaved, so machine load hits both alike
        for mode in fns:
            times[mode].append(step_time(model, opt, fns[mode], batch, spec, max_tokens))
    pg = prefix_grouper_factory(batch) if name == "grpo" and with_pg else None
    pg_s = None
    if pg is not None:
        pg_fn = lambda m, b, s, t: packed_forward_backward(m, b, s, t, attention=pg)  # noqa: E731
        try:
            step_time(model, opt, pg_fn, batch, spec, max_tokens)
            pg_s = statistics.median(step_time(model, opt, pg_fn, batch, spec, max_tokens)[0] for _ in range(repeats))
        except Exception as e:  # noqa: BLE001 - an optional column must not sink the bench
            print(f"prefix-grouper column failed: {e}", flush=True)
    med = lambda mode, k: statistics.median(t[k] for t in times[mode])  # noqa: E731 - k 0: wall, 1: CPU
    flat_s, trie_s = med("flat", 0), med("trie", 0)
    ratio = total / unique
    speedup = flat_s / trie_s
    row = {
        "name": name,
        "total_tokens": total,
        "unique_tokens": unique,
        "token_ratio": round(ratio, 4),
        "flat_step_s": round(flat_s, 4),
        "trie_step_s": round(trie_s, 4),
        "speedup": round(speedup, 4),
        "efficiency": round(speedup / ratio, 4),
        "trajectories": len(batch),
        "trees": len(forest.trees),
        "packed_tokens_trie": sum(len(mb) for mb in pack(forest, max_tokens)),
        "flat_times_s": [round(t[0], 4) for t in times["flat"]],
        "trie_times_s": [round(t[0], 4) for t in times["trie"]],
        "flat_cpu_s": round(med("flat", 1), 4),
        "trie_cpu_s": round(med("trie", 1), 4),
        "speedup_cpu": round(med("flat", 1) / med("trie", 1), 4),
    }
    if name in PARAMS:
        row["params"] = PARAMS[name]
    row["flop_ratio"] = round(
        flop_estimate(cfg, batch, False, max_tokens) / flop_estimate(cfg, batch, True, max_tokens), 4
    )
    row["speedup_over_flop_ratio"] = round(speedup / row["flop_ratio"], 4)
    row["efficiency_vs_flops"] = row["speedup_over_flop_ratio"]  # the name for it (target ≥ 0.95)
    # The same ratio for the 1b preset (estimate only, not timed): linears dominate there, so the ceiling
    # approaches the token ratio.
    big = preset("1b")
    row["flop_ratio_1b_estimate"] = round(
        flop_estimate(big, batch, False, max_tokens) / flop_estimate(big, batch, True, max_tokens), 4
    )
    if pg_s is not None:
        row["prefix_grouper_step_s"] = round(pg_s, 4)
        row["prefix_grouper_speedup"] = round(flat_s / pg_s, 4)
    print(
        f"{name:8s} total {total:6d} unique {unique:6d} ratio {ratio:5.2f}  flat {flat_s:7.3f}s  "
        f"trie {trie_s:7.3f}s  speedup {speedup:5.2f}x (CPU time {row['speedup_cpu']:5.2f}x)  "
        f"efficiency {speedup / ratio:5.2f}  flop ratio {row['flop_ratio']:5.2f}",
        flush=True,
    )
    return row


def fsdp2_worker(names: list[str], repeats: int, max_tokens: int, out: str) -> None:
    """Under torchrun: each workload's flat and trie steps on the FSDP2-sharded tiny model, every rank passing
    the whole batch and training its share; barriers bracket each step so the slowest rank sets the time."""
    import torch.distributed as dist

    from trainflow_trainer.train import init_distributed, parallelize

    d = init_distributed()
    res = {}
    for name in names:
        build, spec = WORKLOADS[name]
        batch = build(np.random.default_rng(0), preset("tiny").vocab_size)
        torch.manual_seed(0)
        model = parallelize(Transformer(preset("tiny")), d)
        opt = torch.optim.AdamW(model.parameters(), lr=1e-5)
        fns = {
            "flat": lambda m, b, s, t: flat_forward_backward(m, b, s, t, rank=d.rank, world=d.world),
            "trie": lambda m, b, s, t: packed_forward_backward(m, b, s, t, rank=d.rank, world=d.world),
        }
        times: dict[str, list[float]] = {"flat": [], "trie": []}
        for mode in fns:
            step_time(model, opt, fns[mode], batch, spec, max_tokens)
        for _ in range(repeats):
            for mode in fns:
                dist.barrier()
                t0 = time.perf_counter()
                step_time(model, opt, fns[mode], batch, spec, max_tokens)
                dist.barrier()
                times[mode].append(time.perf_counter() - t0)
        res[name] = {mode: statistics.median(t) for mode, t in times.items()}
    if d.is_main:
        Path(out).write_text(json.dumps(res))
    dist.destroy_process_group()


def fsdp2_rows(names: list[str], repeats: int, max_tokens: int, threads: int) -> dict:
    """Runs fsdp2_worker on 2 ranks (one thread each) and returns {workload: {flat, trie} seconds}."""
    import socket
    import subprocess
    import tempfile

    with socket.socket() as s, tempfile.TemporaryDirectory() as tmp:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        s.close()
        out = Path(tmp) / "fsdp2.json"
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_addr=127.0.0.1",
               f"--master_port={port}", __file__, "--fsdp2-worker", str(out), "--repeats", str(repeats),
               "--max-tokens", str(max_tokens), "--only", *names]  # fmt: skip
        env = {**os.environ, "OMP_NUM_THREADS": str(threads), "TRAINFLOW_DEVICE": "cpu"}
        subprocess.run(cmd, env=env, check=True, timeout=3600)
        return json.loads(out.read_text())


def add_fsdp2(rows: list[dict], times: dict) -> None:
    """The 2-rank row of each workload, next to its 1-process numbers."""
    for r in rows:
        t = times[r["name"]]
        speedup = t["flat"] / t["trie"]
        r["fsdp2"] = {
            "ranks": 2,
            "flat_step_s": round(t["flat"], 4),
            "trie_step_s": round(t["trie"], 4),
            "speedup": round(speedup, 4),
            "efficiency_vs_flops": round(speedup / r["flop_ratio"], 4),
            "trie_scaling_efficiency": round(r["trie_step_s"] / (2 * t["trie"]), 4),
        }
        print(
            f"{r['name']:8s} FSDP2 x2  flat {t['flat']:7.3f}s  trie {t['trie']:7.3f}s  speedup {speedup:5.2f}x  "
            f"vs flops {speedup / r['flop_ratio']:5.2f}",
            flush=True,
        )


def refresh_fsdp2(out: Path, repeats: int, max_tokens: int, threads: int) -> None:
    """Re-times the FSDP2 rows of an earlier full run (e.g. after a change to the multi-rank step)."""
    saved = json.loads(out.read_text())
    rows = saved["workloads"]
    start = os.getloadavg()
    add_fsdp2(rows, fsdp2_rows([r["name"] for r in rows], repeats, max_tokens, threads))
    for r in rows:
        r["fsdp2"]["load_average_at_start"] = [round(x, 2) for x in start]
        r["fsdp2"]["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    out.write_text(json.dumps(saved, indent=2) + "\n")
    print(f"wrote the FSDP2 rows into {out}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=5, help="timed steps per mode (after one warm-up)")
    ap.add_argument("--max-tokens", type=int, default=8192)
    ap.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads; 1 by default: on the shared 2-core machine a 2-thread step waits at every "
        "op's barrier for whichever thread another process preempted, which measures the load, "
        "not the work (and hits the mode with more, smaller ops harder)",
    )
    ap.add_argument("--only", nargs="*", default=list(WORKLOADS))
    ap.add_argument("--wide", action="store_true", help="also time grpo and agentic on the WIDE config (minutes)")
    ap.add_argument("--wide-repeats", type=int, default=2)
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "trie.json"))
    ap.add_argument("--no-fsdp2", action="store_true", help="skip the 2-rank FSDP2 rows")
    ap.add_argument(
        "--fsdp2-only",
        action="store_true",
        help="re-time only the 2-rank FSDP2 rows into the existing --out JSON (its 1-process rows kept; the "
        "rows' own load averages recorded beside them)",
    )
    ap.add_argument("--fsdp2-worker", help=argparse.SUPPRESS)  # internal: one torchrun rank, writes here
    args = ap.parse_args()
    if args.fsdp2_worker:
        fsdp2_worker(args.only, args.repeats, args.max_tokens, args.fsdp2_worker)
        return
    torch.set_num_threads(args.threads)
    os.nice(5)  # a shared machine: other sessions' work first
    if args.fsdp2_only:
        refresh_fsdp2(Path(args.out), args.repeats, args.max_tokens, args.threads)
        return
    load_at_start = os.getloadavg()

    rows = [measure(preset("tiny"), name, args.repeats, args.max_tokens) for name in args.only]
    if not args.no_fsdp2:
        add_fsdp2(rows, fsdp2_rows(args.only, args.repeats, args.max_tokens, args.threads))
    wide_rows = []
    if args.wide:  # second row set: a wider model (defined here, not a trainer preset), fewer repeats
        print(f"wide preset {WIDE}", flush=True)
        wide_rows = [
            measure(WIDE, name, args.wide_repeats, args.max_tokens, with_pg=False)
            for name in ("grpo", "agentic")
            if name in args.only
        ]

    pg_row = next((r for r in rows if "prefix_grouper_step_s" in r), None)
    pg_value = pg_row["prefix_grouper_step_s"] if pg_row else None
    if pg_row:
        import prefix_grouper

        pg_note = (
            f"prefix-grouper (imported from {Path(prefix_grouper.__file__).parent}) as the attention backend "
            "on the same trie layout; not in trainer/requirements.txt"
        )
    else:
        pg_note = "prefix-grouper not importable: pip install prefix-grouper==0.0.1.post1 to add this column"
    targets = {
        "grpo_efficiency_ge_0.8": next((r["efficiency"] >= 0.8 for r in rows if r["name"] == "grpo"), None),
        "agentic_efficiency_ge_0.8": next((r["efficiency"] >= 0.8 for r in rows if r["name"] == "agentic"), None),
        "agentic_speedup_ge_2.5": next((r["speedup"] >= 2.5 for r in rows if r["name"] == "agentic"), None),
        "none_at_most_5pct_slower": next((r["speedup"] >= 1 / 1.05 for r in rows if r["name"] == "none"), None),
        "grpo_efficiency_vs_flops_ge_0.95": next(
            (r["efficiency_vs_flops"] >= 0.95 for r in rows if r["name"] == "grpo"), None
        ),
        "agentic_efficiency_vs_flops_ge_0.95": next(
            (r["efficiency_vs_flops"] >= 0.95 for r in rows if r["name"] == "agentic"), None
        ),
    }
    result = {
        "workloads": rows,
        **(
            {
                "wide_workloads": wide_rows,
                "wide_preset": {
                    **WIDE.__dict__,
                    "repeats": args.wide_repeats,
                    "note": "second row set, not the issue's (those are tiny)",
                },
            }
            if wide_rows
            else {}
        ),
        "targets_met": targets,
        "prefix_grouper": {"grpo_step_s": pg_value, "note": pg_note},
        "config": {
            "preset": "tiny",
            "dtype": "float32",
            "device": "cpu",
            "threads": args.threads,
            "max_tokens": args.max_tokens,
            "repeats": args.repeats,
            "step": "forward+backward+AdamW",
            "statistic": "median",
            "torch": torch.__version__,
            "machine": platform.processor() or platform.machine(),
            "nice": 5,
            "load_average_at_start": [round(x, 2) for x in load_at_start],
            "load_average_at_end": [round(x, 2) for x in os.getloadavg()],
        },
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\n{'workload':14s} {'ratio':>6s} {'speedup':>8s} {'effic.':>7s} {'flop ratio':>10s}")
    for tag, rs in (("", rows), (" (wide)", wide_rows)):
        for r in rs:
            print(
                f"{r['name'] + tag:14s} {r['token_ratio']:6.2f} {r['speedup']:8.2f} {r['efficiency']:7.2f} "
                f"{r['flop_ratio']:10.2f}"
            )
    print("targets:", targets)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
