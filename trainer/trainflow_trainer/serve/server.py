"""An OpenAI-compatible HTTP server over the engine (standard library only: ThreadingHTTPServer).

Endpoints
  POST /v1/completions        prompt as text or token ids; n, max_tokens, temperature, top_p, seed,
                              stop_token_ids, ignore_eos, stream (SSE)
  POST /v1/chat/completions   messages (+ tools) rendered with the chat template; tool calls parsed from
                              <tool_call>{json}</tool_call>; extension: `prompt_token_ids` replaces the
                              rendered prompt (token in, token out)
  POST /tokenize              {prompt} or {messages, tools, add_generation_prompt} -> {tokens, count}
  GET  /v1/models, /health
  admin (Bearer admin token when one is set): POST /pause, /resume, /reload {path, version?}; GET /state

Every response carries, per choice, `token_ids`, `policy_versions` (one per generated token) and
`logprobs` in OpenAI shape with tokens written as `token_id:N` (vLLM's `return_tokens_as_token_ids`), and
at top level `prompt_token_ids` (what vLLM returns with `return_token_ids`).
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from . import api
from .api import Watch
from .codec import BadRequest, Codec, choice_tokens, response_tokens
from .engine import Engine, EngineError, Generation, Runner, SamplingParams, Token

Loader = Callable[[str], tuple[Runner, int | None]]


class ServeState:
    def __init__(self, engine: Engine, codec: Codec, loader: Loader, model_name: str, admin_token: str | None):
        self.engine, self.codec, self.loader = engine, codec, loader
        self.model_name, self.admin_token = model_name, admin_token
        self.reload_lock = threading.Lock()
        self.checkpoint: str | None = None


# ------------------------------------------------------------------------------------------ request parsing


def _num(body: dict, key: str, default: Any, kind: type, lo: float | None = None, hi: float | None = None) -> Any:
    v = body.get(key, default)
    if v is None:
        return default
    if kind is int and (isinstance(v, bool) or not isinstance(v, int)):
        raise BadRequest(f"field '{key}' must be an integer, got {json.dumps(v)}")
    if kind is float and (isinstance(v, bool) or not isinstance(v, (int, float))):
        raise BadRequest(f"field '{key}' must be a number, got {json.dumps(v)}")
    if (lo is not None and v < lo) or (hi is not None and v > hi):
        raise BadRequest(f"field '{key}' must be in [{lo}, {hi}], got {v}")
    return kind(v)


def sampling_params(body: dict, prompt_len: int, max_len: int) -> tuple[SamplingParams, int]:
    n = _num(body, "n", 1, int, 1, 64)
    stop_ids = body.get("stop_token_ids") or []
    if not isinstance(stop_ids, list) or not all(isinstance(i, int) for i in stop_ids):
        raise BadRequest("field 'stop_token_ids' must be a list of integers")
    allowed = body.get("allowed_token_ids")
    if allowed is not None and (
        not isinstance(allowed, list) or not allowed or not all(isinstance(i, int) for i in allowed)
    ):
        raise BadRequest("field 'allowed_token_ids' must be a non-empty list of token ids")
    params = SamplingParams(
        allowed_token_ids=tuple(allowed) if allowed is not None else None,
        max_tokens=api.max_tokens_for(body, prompt_len, max_len),
        temperature=_num(body, "temperature", 1.0, float, 0.0, 10.0),
        top_p=_num(body, "top_p", 1.0, float, 1e-6, 1.0),
        seed=_num(body, "seed", None, int),
        stop_token_ids=tuple(stop_ids),
        ignore_eos=bool(body.get("ignore_eos", False)),
        top_logprobs=_top_logprobs(body),
    )
    return params, n


def _top_logprobs(body: dict) -> int:
    """Alternatives per token: chat's `top_logprobs` (0-20, with logprobs: true), completions' `logprobs` (0-5)."""
    if "messages" in body:
        k = _num(body, "top_logprobs", 0, int, 0, 20)
        if k and body.get("logprobs") is not True:
            raise api.ApiError("'top_logprobs' needs 'logprobs': true", "top_logprobs", "invalid_value")
        return k
    lp = body.get("logprobs")
    return 0 if lp is None or lp is False else _num(body, "logprobs", 0, int, 0, 5)


def completion_prompt(body: dict, codec: Codec) -> list[int]:
    prompt = body.get("prompt")
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], (str, list)):
        prompt = prompt[0]  # a batch of one
    if isinstance(prompt, str):
        return codec.encode(prompt)
    if isinstance(prompt, list) and prompt and all(isinstance(i, int) and not isinstance(i, bool) for i in prompt):
        bad = [i for i in prompt if not 0 <= i < codec.vocab_size]
        if bad:
            raise BadRequest(
                f"field 'prompt' holds token ids outside the vocabulary [0, {codec.vocab_size}): {bad[:5]}"
            )
        return list(prompt)
    raise BadRequest("field 'prompt' must be a string or a non-empty list of token ids (one prompt per request)")


def chat_prompt(body: dict, codec: Codec) -> list[int]:
    ids = body.get("prompt_token_ids")
    if ids is not None:
        if (
            not isinstance(ids, list)
            or not ids
            or not all(isinstance(i, int) and 0 <= i < codec.vocab_size for i in ids)
        ):
            raise BadRequest("field 'prompt_token_ids' must be a non-empty list of token ids within the vocabulary")
        return list(ids)
    return codec.encode_chat(api.normalise_messages(body.get("messages")), body.get("tools"))


# ------------------------------------------------------------------------------------------------- responses


def _logprob_entry(t: Token) -> dict:
    top = [{"token": f"token_id:{i}", "logprob": lp, "bytes": None} for i, lp in t.top or []]
    return {"token": f"token_id:{t.id}", "logprob": t.logprob, "bytes": None, "top_logprobs": top}


def _completion_logprobs(tokens: list[Token]) -> dict:
    out: dict[str, Any] = {
        "tokens": [f"token_id:{t.id}" for t in tokens],
        "token_logprobs": [t.logprob for t in tokens],
    }
    if any(t.top for t in tokens):
        out["top_logprobs"] = [{f"token_id:{i}": lp for i, lp in t.top or []} for t in tokens]
    return out


def _choice_extras(gen: Generation) -> dict:
    return choice_tokens([t.id for t in gen.tokens], [t.version for t in gen.tokens])


def interleave(gens: list[Generation], engine: Engine) -> Iterator[tuple[int, Generation]]:
    """Advances the n generations of one request together, yielding (choice index, generation) per token."""
    for i, _ in engine.run_many(gens):
        yield i, gens[i]


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "trainflow-serve/1"
    state: ServeState  # set on the subclass made by make_server

    def log_message(self, format: str, *args: Any) -> None:  # quiet: one line per request is noise here
        pass

    # ---- plumbing ----
    def _send_json(self, code: int, obj: Any) -> None:
        data = json.dumps(obj).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _error(
        self,
        status: int,
        message: str,
        kind: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
    ) -> None:
        """OpenAI's error shape: message, type, the parameter it is about, and a string code (or null)."""
        self._send_json(status, {"error": {"message": message, "type": kind, "param": param, "code": code}})

    def _body(self) -> dict:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            body = json.loads(raw or b"{}")
        except ValueError as e:
            raise BadRequest(f"the request body is not valid JSON ({e})") from e
        if not isinstance(body, dict):
            raise BadRequest("the request body must be a JSON object")
        return body

    def _admin_ok(self) -> bool:
        token = self.state.admin_token
        if token and self.headers.get("Authorization") != f"Bearer {token}":
            self._error(401, "this admin endpoint needs 'Authorization: Bearer <admin token>'", "authentication_error")
            return False
        return True

    def _sse_start(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()

    def _sse(self, obj: Any) -> None:
        data = b"data: " + (obj if isinstance(obj, bytes) else json.dumps(obj).encode()) + b"\n\n"
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        self.wfile.flush()

    def _sse_end(self) -> None:
        self._sse(b"[DONE]")
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()

    # ---- routing ----
    def do_GET(self) -> None:
        st = self.state
        if self.path == "/health":
            self._send_json(200, {"ok": True})
        elif self.path == "/v1/models":
            self._send_json(
                200, {"object": "list", "data": [{"id": st.model_name, "object": "model", "owned_by": "trainflow"}]}
            )
        elif self.path == "/state":
            if self._admin_ok():
                e = st.engine
                self._send_json(
                    200,
                    {
                        "paused": e.paused,
                        "policy_version": e.version,
                        "reloads": e.reloads,
                        "checkpoint": st.checkpoint,
                        **e.stats(),
                    },
                )
        else:
            self._error(404, f"no route GET {self.path}")

    def do_POST(self) -> None:
        routes = {
            "/v1/completions": self.completions,
            "/v1/chat/completions": self.chat,
            "/tokenize": self.tokenize,
            "/pause": self.pause,
            "/resume": self.resume,
            "/reload": self.reload,
        }
        route = routes.get(self.path)
        if route is None:
            self._error(404, f"no route POST {self.path}")
            return
        try:
            route(self._body())
        except api.ApiError as e:
            self._error(400, str(e), param=e.param, code=e.code)
        except BadRequest as e:
            self._error(400, str(e))
        except EngineError as e:
            self._error(400, str(e))
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client went away mid-stream

    # ---- admin ----
    def pause(self, _body: dict) -> None:
        if self._admin_ok():
            self.state.engine.pause()
            self._send_json(200, {"paused": True, "policy_version": self.state.engine.version})

    def resume(self, _body: dict) -> None:
        if self._admin_ok():
            self.state.engine.resume()
            self._send_json(200, {"paused": False, "policy_version": self.state.engine.version})

    def reload(self, body: dict) -> None:
        if not self._admin_ok():
            return
        path = body.get("path") or body.get("uri")
        if not isinstance(path, str) or not path:
            raise BadRequest("field 'path' must name a committed checkpoint folder (local path or s3:// URI)")
        version = body.get("version")
        if version is not None and (not isinstance(version, int) or isinstance(version, bool)):
            raise BadRequest("field 'version' must be an integer policy version")
        st = self.state
        with st.reload_lock:
            try:
                runner, step = st.loader(path)  # load outside the engine lock: generation keeps going meanwhile
            except Exception as e:  # noqa: BLE001 - every load failure is the caller's bad path or checkpoint
                self._error(400, f"cannot load weights from {path}: {e}")
                return
            v = st.engine.swap(
                runner,
                version if version is not None else (step if step is not None and step > st.engine.version else None),
            )
            st.checkpoint = path
        self._send_json(200, {"policy_version": v, "checkpoint": path, "paused": st.engine.paused})

    # ---- inference ----
    def tokenize(self, body: dict) -> None:
        codec = self.state.codec
        if "messages" in body:
            messages = api.normalise_messages(body["messages"])  # as chat renders them (the proxy's drift fix)
            ids = codec.encode_chat(messages, body.get("tools"), bool(body.get("add_generation_prompt", True)))
        elif isinstance(body.get("prompt"), str):
            ids = codec.encode(body["prompt"])
        else:
            raise BadRequest("give 'prompt' (a string) or 'messages' (a chat) to tokenize")
        self._send_json(200, {"tokens": ids, "count": len(ids), "max_model_len": self.state.engine.max_len})

    def _start(self, body: dict, prompt_ids: list[int], kind: str) -> list[Watch]:
        st = self.state
        api.check_parameters(body, kind)
        params, n = sampling_params(body, len(prompt_ids), st.engine.max_len)
        allowed = params.allowed_token_ids or ()
        if any(not 0 <= i < st.codec.vocab_size for i in allowed):
            raise BadRequest(f"field 'allowed_token_ids' holds ids outside the vocabulary [0, {st.codec.vocab_size})")
        stops = api.stop_strings(body)
        rules = api.tool_rules(body, st.codec) if kind == "chat" else api.ToolRules()
        params = SamplingParams(**{**params.__dict__, "banned_token_ids": rules.banned})
        watches = []
        for i in range(n):
            p = SamplingParams(**{**params.__dict__, "seed": None if params.seed is None else params.seed + i})
            watches.append(Watch(Generation(list(prompt_ids), p), st.codec, stops, replace(rules)))
        return watches

    def completions(self, body: dict) -> None:
        st = self.state
        prompt_ids = completion_prompt(body, st.codec)
        watches = self._start(body, prompt_ids, "completion")
        gens = [w.gen for w in watches]
        rid, created = f"cmpl-{uuid.uuid4().hex}", int(time.time())
        base = {"id": rid, "object": "text_completion", "created": created, "model": st.model_name}
        if body.get("stream"):
            self._sse_start()
            shown = [""] * len(gens)
            for i, g in interleave(gens, st.engine):
                watches[i].step()
                t = g.tokens[-1]
                piece = _advance(shown, i, watches[i].text if g.finish_reason else watches[i].visible())
                self._sse(
                    {
                        **base,
                        "choices": [
                            {
                                "index": i,
                                "text": piece,
                                "finish_reason": None,
                                "logprobs": _completion_logprobs([t]),
                                **choice_tokens([t.id], [t.version]),
                            }
                        ],
                    }
                )
            for i, g in enumerate(gens):
                rest = _advance(shown, i, watches[i].text)
                choice = {"index": i, "text": rest, "finish_reason": g.finish_reason, **choice_tokens([], [])}
                self._sse({**base, "choices": [choice]})
            self._sse({**base, "choices": [], **response_tokens(prompt_ids), "usage": _usage(prompt_ids, gens)})
            self._sse_end()
            return
        for i, _ in interleave(gens, st.engine):
            watches[i].step()
        choices = []
        for i, g in enumerate(gens):
            choices.append(
                {
                    "index": i,
                    "text": watches[i].text,
                    "finish_reason": g.finish_reason,
                    "logprobs": _completion_logprobs(g.tokens),
                    **_choice_extras(g),
                }
            )
        self._send_json(
            200, {**base, "choices": choices, **response_tokens(prompt_ids), "usage": _usage(prompt_ids, gens)}
        )

    def chat(self, body: dict) -> None:
        st = self.state
        prompt_ids = chat_prompt(body, st.codec)
        watches = self._start(body, prompt_ids, "chat")
        gens = [w.gen for w in watches]
        rid, created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())
        base = {"id": rid, "object": "chat.completion", "created": created, "model": st.model_name}

        def finish(w: Watch) -> tuple[dict, str]:
            content, calls = api.split_output(w.text, w.forced_name)
            msg: dict[str, Any] = {"role": "assistant", "content": content if (content or not calls) else None}
            if calls:
                msg["tool_calls"] = calls
            g = w.gen
            reason = "tool_calls" if calls and g.finish_reason == "stop" else (g.finish_reason or "stop")
            return msg, reason

        if body.get("stream"):
            base["object"] = "chat.completion.chunk"
            self._sse_start()
            shown = [""] * len(gens)
            for i in range(len(gens)):
                self._sse(
                    {
                        **base,
                        "choices": [{"index": i, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}],
                    }
                )
            for i, g in interleave(gens, st.engine):
                watches[i].step()
                t = g.tokens[-1]
                piece = _advance(shown, i, watches[i].visible())
                self._sse(
                    {
                        **base,
                        "choices": [
                            {
                                "index": i,
                                "delta": {"content": piece},
                                "finish_reason": None,
                                "logprobs": {"content": [_logprob_entry(t)]},
                                **choice_tokens([t.id], [t.version]),
                            }
                        ],
                    }
                )
            for i, w in enumerate(watches):
                msg, reason = finish(w)
                delta: dict[str, Any] = {}
                rest = _advance(shown, i, msg["content"] or "")
                if rest:
                    delta["content"] = rest
                if msg.get("tool_calls"):
                    delta["tool_calls"] = [{"index": k, **c} for k, c in enumerate(msg["tool_calls"])]
                self._sse(
                    {
                        **base,
                        "choices": [{"index": i, "delta": delta, "finish_reason": reason, **choice_tokens([], [])}],
                    }
                )
            self._sse({**base, "choices": [], **response_tokens(prompt_ids), "usage": _usage(prompt_ids, gens)})
            self._sse_end()
            return
        for i, _ in interleave(gens, st.engine):
            watches[i].step()
        choices: list[dict[str, Any]] = []
        for w in watches:
            msg, reason = finish(w)
            choices.append(
                {
                    "index": len(choices),
                    "message": msg,
                    "finish_reason": reason,
                    "logprobs": {"content": [_logprob_entry(t) for t in w.gen.tokens]},
                    **_choice_extras(w.gen),
                }
            )
        self._send_json(
            200, {**base, "choices": choices, **response_tokens(prompt_ids), "usage": _usage(prompt_ids, gens)}
        )


def _advance(shown: list[str], i: int, text: str) -> str:
    """The part of `text` not yet streamed for choice i (nothing when it no longer extends what was sent)."""
    if not text.startswith(shown[i]):
        return ""
    piece = text[len(shown[i]) :]
    shown[i] = text
    return piece


def _usage(prompt_ids: list[int], gens: list[Generation]) -> dict:
    out = sum(len(g.tokens) for g in gens)
    return {"prompt_tokens": len(prompt_ids), "completion_tokens": out, "total_tokens": len(prompt_ids) + out}


def make_server(state: ServeState, host: str = "127.0.0.1", port: int = 0) -> ThreadingHTTPServer:
    handler = type("BoundHandler", (Handler,), {"state": state})
    server = ThreadingHTTPServer((host, port), handler)
    server.daemon_threads = True
    return server
