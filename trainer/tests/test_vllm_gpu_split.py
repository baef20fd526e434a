"""Each vLLM engine of a fleet its own slice of a GPU host's devices (engines/vllm.py gpu_slices, visible_gpus;
rl/rollouts.py engines): engine i of N on G GPUs sees the i-th G/N (CUDA_VISIBLE_DEVICES, dealt out by the data
plane's shareOut) and is tensor-parallel over them. No GPU host runs these tests: the GPU host is a stand-in
(TRAINFLOW_VLLM_GPU=1, a fake nvidia-smi, a fake vLLM interpreter path); nothing here starts vLLM on a GPU."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from trainflow_trainer.contract.models import Inference
from trainflow_trainer.engines import vllm as vllm_engine
from trainflow_trainer.errors import BadInput
from trainflow_trainer.rl import rollouts


def test_engine_i_of_n_gets_the_ith_equal_slice() -> None:
    gpus = [str(i) for i in range(8)]
    assert vllm_engine.gpu_slices(1, gpus) == [gpus]
    assert vllm_engine.gpu_slices(2, gpus) == [["0", "1", "2", "3"], ["4", "5", "6", "7"]]
    assert vllm_engine.gpu_slices(8, gpus) == [[g] for g in gpus]
    # the ids are the host's, not 0..G-1 (a scheduler may hand the job GPUs 4-7)
    assert vllm_engine.gpu_slices(2, ["4", "5", "6", "7"]) == [["4", "5"], ["6", "7"]]


@pytest.mark.parametrize(("servers", "gpus"), [(3, 8), (5, 4), (2, 0)])
def test_a_split_that_is_not_even_is_a_bad_input(servers: int, gpus: int) -> None:
    with pytest.raises(BadInput, match=rf"rollout.inference.servers {servers}: this host shows {gpus} GPU"):
        vllm_engine.gpu_slices(servers, [str(i) for i in range(gpus)])


def test_the_gpus_a_job_sees(tmp_path: Path) -> None:
    assert vllm_engine.visible_gpus({"CUDA_VISIBLE_DEVICES": "2, 3"}) == ["2", "3"]
    assert vllm_engine.visible_gpus({"CUDA_VISIBLE_DEVICES": ""}) == []
    smi = tmp_path / "nvidia-smi"  # stand-in for a 4-GPU host's nvidia-smi (its -L format)
    smi.write_text("#!/bin/sh\n" + "".join(f'echo "GPU {i}: NVIDIA H100 (UUID: GPU-{i})"\n' for i in range(4)))
    smi.chmod(smi.stat().st_mode | stat.S_IEXEC)
    with pytest.MonkeyPatch.context() as m:
        m.setenv("PATH", str(tmp_path))
        assert vllm_engine.visible_gpus({}) == ["0", "1", "2", "3"]
        m.setenv("PATH", str(tmp_path / "nowhere"))
        assert vllm_engine.visible_gpus({}) == []


def _inference(servers: int) -> Inference:
    return Inference(backend="vllm", servers=servers, colocated=0)


def test_the_launch_template_on_a_gpu_host(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRAINFLOW_VLLM_GPU", "1")
    monkeypatch.setattr(vllm_engine, "vllm_python", lambda: Path("/venv/bin/python"))  # no GPU vLLM env here
    policy = tmp_path / "policy"
    policy.mkdir()
    (policy / "config.json").write_text("{}")
    block = rollouts.engines(_inference(2), policy, {"CUDA_VISIBLE_DEVICES": "4,5,6,7"})
    assert block["gpus"] == ["4", "5", "6", "7"]  # shareOut deals them as [4,5] and [6,7]
    argv = block["argv"]
    assert argv[argv.index("--tensor-parallel-size") + 1] == "2"
    assert "--enable-sleep-mode" in argv and block["sleep"] == "vllm"
    one = rollouts.engines(_inference(4), policy, {"CUDA_VISIBLE_DEVICES": "4,5,6,7"})
    assert "--tensor-parallel-size" not in one["argv"]  # one GPU each: vLLM's default
    with pytest.raises(BadInput, match="servers 3: this host shows 4 GPU"):
        rollouts.engines(_inference(3), policy, {"CUDA_VISIBLE_DEVICES": "4,5,6,7"})


def test_on_a_cpu_host_the_core_shares_stay(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRAINFLOW_VLLM_GPU", "0")
    monkeypatch.setattr(vllm_engine, "vllm_python", lambda: Path("/venv/bin/python"))
    policy = tmp_path / "policy"
    policy.mkdir()
    block = rollouts.engines(_inference(2), policy, {})
    assert block["gpus"] is None and block["cpus"] is not None
    assert "--tensor-parallel-size" not in block["argv"]
