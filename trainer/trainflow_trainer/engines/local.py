"""The trainer's own CPU inference server (`python -m trainflow_trainer.serve`) as an engine."""

from __future__ import annotations

import os
import secrets
import sys
from collections.abc import Callable
from pathlib import Path

from ..contract import SERVE_LINE_PREFIX, ServeReady
from ..rl.processes import Child
from .base import Engine, http_json

TRAINER_DIR = Path(__file__).resolve().parents[2]


def server_command(checkpoint: str, port: str, version: str, threads: str) -> list[str]:
    """The server's command line (run in TRAINER_DIR): LocalEngine's, and the fleet's launch template's
    (rl/rollouts.py, with placeholders for the data plane to fill)."""
    argv = [sys.executable, "-m", "trainflow_trainer.serve", "--checkpoint", checkpoint, "--port", port]
    return argv + ["--policy-version", version, "--threads", threads]


class LocalEngine(Engine):
    kind = "local"

    @classmethod
    def start(
        cls,
        checkpoint: str,
        version: int,
        env: dict[str, str] | None = None,
        threads: int = 1,
        should_stop: Callable[[], bool] = lambda: False,
        log: Callable[[str], None] = lambda _m: None,
    ) -> LocalEngine:
        env = dict(os.environ if env is None else env)
        token = env.setdefault("TRAINFLOW_SERVE_ADMIN_TOKEN", secrets.token_hex(16))
        argv = server_command(checkpoint, "0", str(version), str(threads))
        child = Child("serve", argv, SERVE_LINE_PREFIX.rstrip(), cwd=str(TRAINER_DIR), env=env)
        try:
            info = ServeReady.model_validate(child.next_message(120, should_stop))
        except BaseException:
            child.stop()
            raise
        log(f"trainflow: inference server on {info.host}:{info.port} (policy version {info.policy_version})")
        return cls(child, f"http://{info.host}:{info.port}", info.policy_version, token)

    def ready(self, timeout: float = 300) -> None:
        """Ready once it printed its TRAINFLOW_SERVE line (start waits for it)."""

    def pause(self) -> None:
        http_json(self.url + "/pause", {}, self.admin_token)

    def resume(self) -> None:
        http_json(self.url + "/resume", {}, self.admin_token)

    def reload(self, folder: str, version: int) -> None:
        http_json(self.url + "/reload", {"path": folder, "version": version}, self.admin_token)
        self.version = version
