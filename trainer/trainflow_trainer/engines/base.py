"""What every rollout engine offers the stage (and tests): a URL, readiness, pause/resume, reload, stop."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from abc import ABC, abstractmethod
from typing import Any

from ..rl.processes import Child


class EngineError(RuntimeError):
    """An engine's control call failed or the engine never became ready."""


def http_json(url: str, payload: Any | None = None, token: str | None = None, timeout: float = 120) -> Any:
    """POST `payload` (GET when None) and parse the JSON answer (None for an empty body)."""
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    data = None if payload is None else json.dumps(payload).encode()
    req = urllib.request.Request(url, data=data, headers=headers, method="GET" if payload is None else "POST")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            body = resp.read()
    except urllib.error.HTTPError as e:
        raise EngineError(f"{url}: HTTP {e.code}: {e.read().decode(errors='replace')[:500]}") from None
    except (urllib.error.URLError, TimeoutError, ConnectionError) as e:
        raise EngineError(f"{url}: unreachable ({getattr(e, 'reason', e)})") from None
    return json.loads(body) if body.strip() else None


class Engine(ABC):
    """One inference server process. `kind` names its control protocol for the proxy (DriverSpec.upstream_engine)."""

    kind: str

    def __init__(self, child: Child, url: str, version: int, admin_token: str | None) -> None:
        self.child, self.url, self.version, self.admin_token = child, url, version, admin_token

    @abstractmethod
    def ready(self, timeout: float = 300) -> None:
        """Blocks until the server answers requests; raises EngineError if it exits or times out."""

    @abstractmethod
    def pause(self) -> None:
        """Freezes generation between two tokens; in-flight requests continue after resume (partial rollout)."""

    @abstractmethod
    def resume(self) -> None: ...

    @abstractmethod
    def reload(self, folder: str, version: int) -> None:
        """Loads the weights of a servable HF folder; tokens sampled afterwards carry `version`."""

    def stop(self) -> None:
        self.child.stop(grace=10.0)

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
