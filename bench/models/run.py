"""Which model path should the trainer use: its home-made Transformer, or stock transformers models with the
tree mask plugged in? Exactness and CPU speed side by side, per model family.

    cd trainer && ../.venv/bin/python ../bench/models/run.py            # smoke size (~2 min on 2 busy cores)
    cd trainer && ../.venv/bin/python ../bench/models/run.py --full     # the trie bench's GRPO size

Paths (adapters.py): `home` = trainflow_trainer.model.Transformer; `hf_tree` = the stock HF model with the
trainer's tree attention registered through `AttentionInterface`; `hf_sdpa4d` = the stock HF model, sdpa with
the tree rule as a 4D boolean mask. All three run the very same trie step (`packed_forward_backward`: packer,
loss, LM head on predicting rows only) on the very same weights (one random HF model per family, loaded into
the home-made model from its save_pretrained folder).

- exactness (float64): per path, ‖trie grad − flat grad‖/‖flat grad‖ (worst parameter) where flat is the
  padded causal batch through that same path, plus the trie gradients of each HF path against `home`'s.
- speed (float32, one torch thread, nice +5, alternating paths, medians): one trie forward+backward of a GRPO
  group (one prompt, 8 answers) per path; wall and process CPU time, and each path's ratio to `home`.

Writes bench/results/models.json and prints a table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path[:0] = [str(ROOT / "trainer"), str(HERE), str(ROOT / "bench" / "trie")]

import workloads  # noqa: E402
from adapters import StockModel, float64_norms, strip_prefix  # noqa: E402
from transformers import AutoModelForCausalLM, LlamaConfig, PretrainedConfig, Qwen2Config, Qwen3Config  # noqa: E402

from trainflow_trainer.model import load_pretrained  # noqa: E402
from trainflow_trainer.trie import LossSpec, packed_forward_backward  # noqa: E402
from trainflow_trainer.trie.attention import DenseTreeMask  # noqa: E402
from trainflow_trainer.trie.losses import flat_reference_loss  # noqa: E402

# The `tiny` preset's shape in each family (Qwen3 with a head_dim of its own, Llama 3.x with llama3 RoPE).
TINY = dict(
    vocab_size=4096,
    hidden_size=128,
    intermediate_size=384,
    num_hidden_layers=4,
    num_attention_heads=4,
    num_key_value_heads=2,
)
FAMILIES: dict[str, Callable[[], PretrainedConfig]] = {
    "qwen2": lambda: Qwen2Config(**TINY, max_position_embeddings=4096, tie_word_embeddings=True),
    "qwen3": lambda: Qwen3Config(**TINY, head_dim=48, max_position_embeddings=4096, tie_word_embeddings=True),
    "llama3": lambda: LlamaConfig(
        **TINY,
        max_position_embeddings=16384,
        tie_word_embeddings=False,
        rope_parameters={
            "rope_type": "llama3",
            "rope_theta": 500000.0,
            "factor": 8.0,
            "low_freq_factor": 1.0,
            "high_freq_factor": 4.0,
            "original_max_position_embeddings": 8192,
        },
    ),
}
PATHS = ("home", "hf_tree", "hf_sdpa4d")
BACKEND: dict[str, Any] = {
    "home": "segment",
    "hf_tree": "segment",
    "hf_sdpa4d": lambda mb: DenseTreeMask(mb.subtree_end),
}


def build(family: str, dtype: torch.dtype, seed: int, folder: Path) -> dict[str, torch.nn.Module]:
    """The three paths on one set of random weights (norm scales randomised too, so they matter)."""
    torch.manual_seed(seed)
    hf = AutoModelForCausalLM.from_config(FAMILIES[family]())
    with torch.no_grad():
        for name, p in hf.named_parameters():
            if "norm" in name:
                p.normal_(1.0, 0.1)
    hf.save_pretrained(folder)
    home = load_pretrained(folder, dtype=dtype)
    return {
        "home": home,
        "hf_tree": StockModel(AutoModelForCausalLM.from_pretrained(folder, dtype=dtype), "hf_tree"),
        "hf_sdpa4d": StockModel(AutoModelForCausalLM.from_pretrained(folder, dtype=dtype), "hf_sdpa4d"),
    }


def grads(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    out = {n: torch.zeros_like(p) if p.grad is None else p.grad.detach().clone() for n, p in model.named_parameters()}
    return strip_prefix(out)


def worst_rel(got: dict[str, torch.Tensor], want: dict[str, torch.Tensor]) -> float:
    """max over parameters of ‖got − want‖/‖want‖ (against the whole gradient's norm where ‖want‖ is ~0)."""
    total = float(torch.sqrt(sum((w**2).sum() for w in want.values())))
    worst = 0.0
    for name, w in want.items():
        scale = max(float(w.norm()), 1e-6 * total)
        worst = max(worst, float((got[name] - w).norm()) / scale)
    return worst


def exactness(family: str, spec: LossSpec, folder: Path) -> dict[str, Any]:
    rng = np.random.default_rng(0)
    trajs = workloads.grpo(rng, 4096, groups=2, group_size=4, prompt_len=24, answer_len=(6, 18))
    models = build(family, torch.float64, 0, folder)
    trie: dict[str, dict[str, torch.Tensor]] = {}
    out: dict[str, Any] = {}
    for path, model in models.items():
        model.zero_grad()
        flat_reference_loss(model, trajs, spec)[0].backward()
        flat = grads(model)
        model.zero_grad()
        packed_forward_backward(model, trajs, spec, 4096, attention=BACKEND[path])
        trie[path] = grads(model)
        out[f"{path}_trie_vs_flat"] = worst_rel(trie[path], flat)
    for path in PATHS[1:]:
        out[f"{path}_vs_home"] = worst_rel(trie[path], trie["home"])
    # The cause of the HF paths' float64 gap: their RMSNorm's float32 cast (see README). With float64 norms:
    model = float64_norms(models["hf_tree"])
    model.zero_grad()
    flat_reference_loss(model, trajs, spec)[0].backward()
    flat = grads(model)
    model.zero_grad()
    packed_forward_backward(model, trajs, spec, 4096, attention="segment")
    out["hf_tree_float64_norms_trie_vs_flat"] = worst_rel(grads(model), flat)
    out["hf_tree_float64_norms_vs_home"] = worst_rel(grads(model), trie["home"])
    return out


def speed(family: str, spec: LossSpec, folder: Path, size: dict[str, Any], repeats: int) -> dict[str, Any]:
    rng = np.random.default_rng(1)
    trajs = workloads.grpo(rng, 4096, groups=1, **size)
    models = build(family, torch.float32, 1, folder)
    wall: dict[str, list[float]] = {p: [] for p in PATHS}
    cpu: dict[str, list[float]] = {p: [] for p in PATHS}
    for r in range(repeats + 1):  # round 0 warms up
        for path in PATHS:
            model = models[path]
            model.zero_grad()
            t0, c0 = time.perf_counter(), time.process_time()
            packed_forward_backward(model, trajs, spec, 1 << 16, attention=BACKEND[path])
            if r > 0:
                wall[path].append(time.perf_counter() - t0)
                cpu[path].append(time.process_time() - c0)
    out: dict[str, Any] = {"tokens": sum(len(t.tokens) for t in trajs)}
    for path in PATHS:
        out[f"{path}_s"] = statistics.median(wall[path])
        out[f"{path}_cpu_s"] = statistics.median(cpu[path])
    for path in PATHS[1:]:
        out[f"{path}_over_home"] = out[f"{path}_s"] / out["home_s"]
        out[f"{path}_over_home_cpu"] = out[f"{path}_cpu_s"] / out["home_cpu_s"]
    return out


def table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| family | trie-vs-flat (float64) home / hf_tree / hf_sdpa4d | hf_tree with float64 norms | "
        "hf_tree vs home | step s home / hf_tree / hf_sdpa4d (CPU s) | hf_tree / home | hf_sdpa4d / home |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        e, s = r["exactness"], r["speed"]
        lines.append(
            f"| {r['family']} | {e['home_trie_vs_flat']:.1e} / {e['hf_tree_trie_vs_flat']:.1e} / "
            f"{e['hf_sdpa4d_trie_vs_flat']:.1e} | {e['hf_tree_float64_norms_trie_vs_flat']:.1e} | "
            f"{e['hf_tree_vs_home']:.1e} | "
            f"{s['home_s']:.3f} / {s['hf_tree_s']:.3f} / {s['hf_sdpa4d_s']:.3f} "
            f"({s['home_cpu_s']:.3f} / {s['hf_tree_cpu_s']:.3f} / {s['hf_sdpa4d_cpu_s']:.3f}) | "
            f"{s['hf_tree_over_home']:.2f}x ({s['hf_tree_over_home_cpu']:.2f}x) | "
            f"{s['hf_sdpa4d_over_home']:.2f}x ({s['hf_sdpa4d_over_home_cpu']:.2f}x) |"
        )
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--full", action="store_true", help="the trie bench's GRPO group: 1024-token prompt, 128-512")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--only", nargs="*", default=list(FAMILIES))
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "models.json"))
    args = ap.parse_args()
    os.nice(5)
    torch.set_num_threads(args.threads)
    size = (
        {"group_size": 8, "prompt_len": 1024, "answer_len": (128, 512)}
        if args.full
        else {"group_size": 8, "prompt_len": 256, "answer_len": (32, 128)}
    )
    spec = LossSpec(kind="ppo", aggregation="seq_mean", eps_high=0.28, kl_coef=0.05)  # GRPO-style
    rows = []
    load0 = os.getloadavg()[0]
    for family in args.only:
        with tempfile.TemporaryDirectory() as d:
            ex = exactness(family, spec, Path(d) / "f64")
            sp = speed(family, spec, Path(d) / "f32", size, args.repeats)
        rows.append({"family": family, "exactness": ex, "speed": sp})
        print(table(rows[-1:]).splitlines()[-1], flush=True)
    result = {
        "bench": "models",
        "size": {**size, "answer_len": list(size["answer_len"])},
        "repeats": args.repeats,
        "threads": args.threads,
        "torch": torch.__version__,
        "transformers": __import__("transformers").__version__,
        "machine": platform.machine(),
        "load_average_at_start": load0,
        "load_average_at_end": os.getloadavg()[0],
        "families": rows,
    }
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(table(rows))


if __name__ == "__main__":
    main()
