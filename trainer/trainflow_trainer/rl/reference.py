"""The KL reference of an RL stage: one fixed set of weights for the whole stage, whatever the retries.

Which weights: `algorithm.kl_reference` when configured, else the stage's input checkpoint, else (a stage
that starts from `model.init`) the policy's initial weights, committed once under the stage's output prefix
as `kl-reference/` (the same commit protocol as a step, so a retry on another machine finds and verifies it).
The chosen URI and the sha256 of the weights (`weights_hash`) go into every checkpoint's trainer state
(`state()`); a resumed attempt loads the recorded URI, not the resumed policy, and refuses weights whose
hash differs. So the KL penalty keeps anchoring to the same policy across preemptions: without this the
reference was the resumed weights and the KL fell back to zero at every retry.

On several ranks every rank holds the whole frozen reference (a plain module, whatever the policy's
sharding) and computes its log-probs; the initial weights are gathered on every rank and committed by rank 0.
"""

from __future__ import annotations

import hashlib
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..checkpoint import commit, read_commit
from ..errors import BadInput
from ..model import Transformer, load_state_dict, save_hf
from ..runtime import StageState
from ..storage import is_s3, join
from ..train import full_model_state

STATE_KEY = "kl_reference"
INIT_FOLDER = "kl-reference"


@dataclass
class Reference:
    model: torch.nn.Module
    uri: str
    sha256: str
    source: str  # configured | input | init

    def state(self) -> dict[str, str]:
        """What the trainer state records (and a retry reloads and checks)."""
        return {"uri": self.uri, "sha256": self.sha256, "source": self.source}


def weights_hash(model: torch.nn.Module) -> str:
    """sha256 over every parameter and buffer of the full state dict: name, dtype, shape and bytes, in name order."""
    h = hashlib.sha256()
    sd = full_model_state(model)
    for name in sorted(sd):
        t = sd[name].detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def _frozen_copy(policy: StageState, weights_dir: Path) -> torch.nn.Module:
    """An unsharded, frozen model of the policy's architecture, dtype and device holding weights_dir's weights
    (built fresh, not deep-copied: the policy may be sharded by FSDP2)."""
    with torch.random.fork_rng(devices=[]):  # the fresh model's init draws must not shift the stage's RNG
        ref = Transformer(policy.cfg)
    ref.load_state_dict(load_state_dict(weights_dir), strict=False)  # tied lm_head may be absent
    p = next(policy.model.parameters())
    ref.to(device=p.device, dtype=p.dtype)
    ref.requires_grad_(False)
    return ref


def _barrier(ctx: Any) -> None:
    if ctx.dist.distributed:
        torch.distributed.barrier()


def _commit_initial(ctx: Any, policy: StageState) -> str:
    """Commits the policy's current (initial) weights as the stage's KL reference folder; returns its URI.
    Every rank calls it (the weights are gathered collectively under FSDP); rank 0 writes."""
    spec = ctx.spec
    uri = join(spec.output_prefix, INIT_FOLDER)
    msd = full_model_state(policy.model)
    if ctx.dist.is_main:
        local = Path(uri) if not is_s3(uri) else Path(spec.work_dir) / "staging" / INIT_FOLDER
        shutil.rmtree(local, ignore_errors=True)
        local.mkdir(parents=True)
        save_hf(msd, policy.cfg, local)
        policy.tok.save(local)
        commit(local, uri, 0, False, ctx.storage)
        if is_s3(uri):
            shutil.rmtree(local, ignore_errors=True)
    _barrier(ctx)  # the other ranks read it once it is committed
    return uri


def load(ctx: Any, policy: StageState, kl_coef: float, configured: str | None) -> Reference | None:
    """The stage's reference model (None when kl_coef is 0): the one the checkpoint recorded, else chosen as
    the module docstring says. BadInput when recorded weights no longer match their hash."""
    if kl_coef <= 0:
        return None
    from ..runtime import open_checkpoint

    recorded = policy.state.get(STATE_KEY)
    if recorded:
        ref = _frozen_copy(policy, open_checkpoint(ctx, recorded["uri"], "the recorded KL reference"))
        digest = weights_hash(ref)
        if digest != recorded["sha256"]:
            raise BadInput(
                f"KL reference {recorded['uri']}: its weights hash {digest[:12]}… differs from the "
                f"{recorded['sha256'][:12]}… this stage's checkpoints recorded: the reference changed under a running "
                "stage (restore it, or rerun the stage from its start)"
            )
        ctx.log(f"trainflow: KL reference {recorded['uri']} (sha256 {digest[:12]}…, as recorded)")
        return Reference(ref, recorded["uri"], digest, recorded.get("source", "input"))
    if policy.found is not None:
        ctx.log(
            f"trainflow: {policy.found.uri} records no KL reference (written before references were recorded): "
            "choosing it as a fresh stage would"
        )
    spec = ctx.spec
    if configured:
        uri, source = configured, "configured"
    elif spec.input_checkpoint:
        uri, source = spec.input_checkpoint, "input"
    else:
        uri, source = join(spec.output_prefix, INIT_FOLDER), "init"
    missing = source == "init" and read_commit(uri, ctx.storage) is None
    _barrier(ctx)  # every rank has looked before rank 0 commits: they all take the same branch
    if missing:
        if policy.found is not None:
            raise BadInput(
                f"the KL reference of this stage (its initial weights, {uri}) was never committed and the policy has "
                "moved on: set algorithm.kl_reference, or rerun the stage from its start"
            )
        uri = _commit_initial(ctx, policy)
    what = "algorithm.kl_reference" if source == "configured" else "the KL reference"
    ref = _frozen_copy(policy, open_checkpoint(ctx, uri, what))
    digest = weights_hash(ref)
    ctx.log(f"trainflow: KL reference {uri} ({source}, sha256 {digest[:12]}…)")
    return Reference(ref, uri, digest, source)
