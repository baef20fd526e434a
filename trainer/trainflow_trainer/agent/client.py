"""A minimal OpenAI-compatible chat client (standard library only): the agent knows nothing but this.

client = ChatClient("http://127.0.0.1:8000/v1", api_key="sess-123")
reply = client.chat(messages, tools=tools, max_tokens=256, temperature=1.0)
reply.message   # {"role": "assistant", "content": ..., "tool_calls": [...]}
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any


class ChatError(RuntimeError):
    """The endpoint answered with an error, or could not be reached."""


@dataclass
class ChatReply:
    message: dict  # the assistant message (content, tool_calls)
    finish_reason: str | None
    usage: dict
    raw: dict  # the whole response (token ids, log-probs and other extensions included)


class ChatClient:
    def __init__(self, base_url: str, api_key: str | None = None, model: str = "default", timeout_s: float = 300.0):
        """base_url: the API root, e.g. http://host:port/v1 (a bare http://host:port gets /v1 added)."""
        base = base_url.rstrip("/")
        self.base_url = base if base.endswith("/v1") else base + "/v1"
        self.api_key, self.model, self.timeout_s = api_key, model, timeout_s

    def chat(self, messages: list[dict], tools: list[dict] | None = None, **params: Any) -> ChatReply:
        body: dict[str, Any] = {"model": self.model, "messages": messages, **params}
        if tools:
            body["tools"] = tools
        raw = self._post("/chat/completions", body)
        try:
            choice = raw["choices"][0]
            message = dict(choice["message"])
        except (KeyError, IndexError, TypeError):
            raise ChatError(f"{self.base_url}/chat/completions: malformed response: {json.dumps(raw)[:300]}") from None
        message.setdefault("role", "assistant")
        return ChatReply(
            message=message, finish_reason=choice.get("finish_reason"), usage=raw.get("usage") or {}, raw=raw
        )

    def _post(self, path: str, body: dict) -> dict:
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        req = urllib.request.Request(
            self.base_url + path, data=json.dumps(body).encode(), headers=headers, method="POST"
        )
        try:
            with urllib.request.urlopen(req, timeout=self.timeout_s) as resp:
                return json.loads(resp.read())
        except urllib.error.HTTPError as e:
            detail = e.read().decode(errors="replace")[:500]
            raise ChatError(f"{self.base_url}{path}: HTTP {e.code}: {detail}") from None
        except (urllib.error.URLError, TimeoutError, ConnectionError) as e:
            raise ChatError(f"{self.base_url}{path}: unreachable ({getattr(e, 'reason', e)})") from None
        except json.JSONDecodeError as e:
            raise ChatError(f"{self.base_url}{path}: response is not JSON ({e.msg})") from None
