"""What the OpenAI API asks of a request, read the way OpenAI reads it, so unchanged agents get what they expect.

- Every parameter is either honoured or refused with a 400 that names it (`param`) and OpenAI's error code:
  an unknown parameter is `unknown_parameter`; a known one this engine cannot honour (penalties, logit bias,
  structured output, audio…) is refused unless it is at its default.
- `max_tokens` / `max_completion_tokens` default to the rest of the context; a prompt (plus max_tokens) over
  the context is `context_length_exceeded` in OpenAI's words.
- Message content may be a list of text parts (joined with a newline, as vLLM does); other part types are refused.
- `stop` strings end a generation (the stop string is not part of the text); `tool_choice` none bans the
  tool-call marker, `required` and a named tool force the opening of a call (and the name); `parallel_tool_calls:
  false` ends the generation after the first complete call.
- Streaming: the text streamed equals the final message's content character for character. What is held back
  while it might still turn out to be markup (a prefix of `<tool_call>` or of a stop string, the newline before a
  call, a partial UTF-8 sequence) is sent with the last chunk when it was content after all.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from typing import Any

from .codec import TOOL_OPEN, BadRequest, Codec
from .engine import Generation

TOOL_END = "</tool_call>"

# Parameters that change nothing in the output: accepted and ignored, as OpenAI does for a model without them.
NEUTRAL = {"model", "user", "metadata", "store", "service_tier", "safety_identifier", "prompt_cache_key"}
# vLLM-compatible extensions this server honours (the proxy and trainflow's own tests send them).
EXTENSIONS = {
    "prompt_token_ids",
    "stop_token_ids",
    "ignore_eos",
    "allowed_token_ids",
    "return_token_ids",
    "return_tokens_as_token_ids",
}
SAMPLING = {"n", "max_tokens", "temperature", "top_p", "seed", "stop", "stream", "stream_options"}
CHAT_HONOURED = SAMPLING | {
    "messages",
    "tools",
    "tool_choice",
    "parallel_tool_calls",
    "logprobs",
    "top_logprobs",
    "max_completion_tokens",
}
COMPLETION_HONOURED = SAMPLING | {"prompt", "logprobs"}
# Known OpenAI parameters this engine cannot honour: refused unless at their default.
CHAT_DEFAULTS: dict[str, Any] = {
    "frequency_penalty": 0,
    "presence_penalty": 0,
    "logit_bias": {},
    "response_format": {"type": "text"},
    "modalities": ["text"],
    "audio": None,
    "prediction": None,
    "web_search_options": None,
    "functions": None,
    "function_call": None,
    "reasoning_effort": None,
    "verbosity": None,
}
COMPLETION_DEFAULTS: dict[str, Any] = {
    "frequency_penalty": 0,
    "presence_penalty": 0,
    "logit_bias": {},
    "echo": False,
    "best_of": 1,
    "suffix": None,
}


class ApiError(BadRequest):
    """A refused request in OpenAI's shape: message, the parameter it is about, and OpenAI's error code."""

    def __init__(self, message: str, param: str | None = None, code: str | None = None):
        super().__init__(message)
        self.param, self.code = param, code


def check_parameters(body: dict, kind: str) -> None:
    honoured = CHAT_HONOURED if kind == "chat" else COMPLETION_HONOURED
    defaults = CHAT_DEFAULTS if kind == "chat" else COMPLETION_DEFAULTS
    for key, value in body.items():
        if key in honoured or key in NEUTRAL or key in EXTENSIONS:
            continue
        if key in defaults:
            if value is None or value == defaults[key]:
                continue
            raise ApiError(
                f"'{key}' is not supported by this engine (only {json.dumps(defaults[key])} is): remove it",
                key,
                "unsupported_parameter",
            )
        raise ApiError(f"Unrecognized request argument supplied: {key}", key, "unknown_parameter")


def context_error(prompt_len: int, max_len: int, max_tokens: int | None) -> ApiError:
    if max_tokens is None:
        msg = (
            f"This model's maximum context length is {max_len} tokens. However, your messages resulted in "
            f"{prompt_len} tokens. Please reduce the length of the messages."
        )
        return ApiError(msg, "messages", "context_length_exceeded")
    msg = (
        f"This model's maximum context length is {max_len} tokens. However, you requested "
        f"{prompt_len + max_tokens} tokens ({prompt_len} in the messages, {max_tokens} in the completion). "
        "Please reduce the length of the messages or completion."
    )
    return ApiError(msg, "max_tokens", "context_length_exceeded")


def max_tokens_for(body: dict, prompt_len: int, max_len: int) -> int:
    """The completion's token budget: the one asked for, or the rest of the context (OpenAI's and vLLM's default)."""
    key = "max_tokens" if body.get("max_tokens") is not None else "max_completion_tokens"
    asked = body.get(key)
    if prompt_len >= max_len:
        raise context_error(prompt_len, max_len, None)
    if asked is None:
        return max_len - prompt_len
    if isinstance(asked, bool) or not isinstance(asked, int) or asked < 1:
        raise ApiError(f"'{key}' must be a positive integer, got {json.dumps(asked)}", key, "invalid_value")
    if prompt_len + asked > max_len:
        raise context_error(prompt_len, max_len, asked)
    return asked


def stop_strings(body: dict) -> tuple[str, ...]:
    stop = body.get("stop")
    if stop is None:
        return ()
    items = [stop] if isinstance(stop, str) else stop
    if not isinstance(items, list) or not all(isinstance(s, str) and s for s in items) or len(items) > 4:
        raise ApiError("'stop' must be a non-empty string or a list of at most 4 of them", "stop", "invalid_value")
    return tuple(items)


# ---------------------------------------------------------------------------------------------- messages


def text_content(content: Any, where: str) -> Any:
    """A message's content as a string: a list of text parts is joined with newlines (as vLLM does)."""
    if not isinstance(content, list):
        return content
    texts = []
    for j, part in enumerate(content):
        kind = part.get("type") if isinstance(part, dict) else None
        if kind != "text" or not isinstance(part.get("text"), str):
            raise ApiError(
                f"{where}.content[{j}]: only text parts ({{'type': 'text', 'text': ...}}) are supported, "
                f"got {json.dumps(kind) if kind else json.dumps(part)[:60]}",
                f"{where}.content[{j}].type",
                "invalid_value",
            )
        texts.append(part["text"])
    return "\n".join(texts)


def normalise_messages(messages: Any) -> Any:
    """The messages with list contents flattened (anything else is left for the template to judge)."""
    if not isinstance(messages, list):
        return messages
    out = []
    for i, m in enumerate(messages):
        if isinstance(m, dict) and isinstance(m.get("content"), list):
            m = {**m, "content": text_content(m["content"], f"messages[{i}]")}
        out.append(m)
    return out


# -------------------------------------------------------------------------------------------- tool choice


@dataclass
class ToolRules:
    banned: tuple[int, ...] = ()  # never sampled
    forced: list[list[int]] = field(default_factory=list)  # the generation starts with one of these id lists
    names: list[str] = field(default_factory=list)  # the tool each forced opening names
    single_call: bool = False  # parallel_tool_calls false: stop after the first complete call


def tool_names(tools: Any) -> list[str]:
    out = []
    for t in tools or []:
        fn = t.get("function") if isinstance(t, dict) else None
        if isinstance(fn, dict) and isinstance(fn.get("name"), str):
            out.append(fn["name"])
    return out


def call_opening(name: str) -> str:
    return TOOL_OPEN + '\n{"name": ' + json.dumps(name, ensure_ascii=False) + ', "arguments": '


def tool_rules(body: dict, codec: Codec) -> ToolRules:
    choice = body.get("tool_choice")
    names = tool_names(body.get("tools"))
    rules = ToolRules(single_call=body.get("parallel_tool_calls") is False)
    if "parallel_tool_calls" in body and not isinstance(body["parallel_tool_calls"], bool | None):
        raise ApiError("'parallel_tool_calls' must be true or false", "parallel_tool_calls", "invalid_value")
    if choice is None or choice == "auto":
        if not names:
            rules.banned = (codec.tokenizer.special_ids[TOOL_OPEN],)  # no tools offered: no call can be meant
        return rules
    if choice == "none":
        rules.banned = (codec.tokenizer.special_ids[TOOL_OPEN],)
        return rules
    if choice == "required":
        chosen = names
    elif isinstance(choice, dict) and choice.get("type") == "function" and isinstance(choice.get("function"), dict):
        name = choice["function"].get("name")
        if name not in names:
            raise ApiError(
                f"tool_choice names the function {json.dumps(name)}, which is not among the tools {names}",
                "tool_choice",
                "invalid_value",
            )
        chosen = [name]
    else:
        raise ApiError(
            "'tool_choice' must be none, auto, required or {'type': 'function', 'function': {'name': ...}}",
            "tool_choice",
            "invalid_value",
        )
    if not chosen:
        raise ApiError("tool_choice requires a tool call but no tools were given", "tool_choice", "invalid_value")
    rules.forced = [codec.encode(call_opening(n)) for n in chosen]
    rules.names = list(chosen)
    return rules


# --------------------------------------------------------------------------------------------- generation


class Watch:
    """Follows one generation token by token: applies the forced opening of a tool call, ends it on a stop
    string or (parallel_tool_calls false) after the first complete call, and knows its text."""

    def __init__(self, gen: Generation, codec: Codec, stops: tuple[str, ...], rules: ToolRules):
        self.gen, self.codec, self.stops, self.rules = gen, codec, stops, rules
        self.text = ""  # the output text so far (end-of-turn tokens dropped), cut at a stop string
        self.forced_name: str | None = None
        self._allowed = gen.params.allowed_token_ids  # the request's own restriction, back after a forced opening
        self._constrain()

    def _constrain(self) -> None:
        """Narrows the next token to the forced openings still consistent with the tokens so far."""
        if not self.rules.forced:
            return
        ids = [t.id for t in self.gen.tokens]
        live = [(f, n) for f, n in zip(self.rules.forced, self.rules.names) if f[: len(ids)] == ids[: len(f)]]
        done = [n for f, n in live if len(ids) >= len(f)]
        params = self.gen.params
        if done or not live:
            self.forced_name = done[0] if done else self.forced_name
            self.gen.params = type(params)(**{**params.__dict__, "allowed_token_ids": self._allowed})
            self.rules.forced = []
            return
        nxt = tuple(sorted({f[len(ids)] for f, _ in live}))
        self.gen.params = type(params)(**{**params.__dict__, "allowed_token_ids": nxt})

    def step(self) -> None:
        """After each token: updates the text and ends the generation where a rule says so."""
        self.text = self.codec.decode_output([t.id for t in self.gen.tokens])
        for s in self.stops:
            cut = self.text.find(s)
            if cut >= 0:
                self.text = self.text[:cut]
                self.gen.finish_reason = "stop"
        if self.rules.single_call and TOOL_END in self.text and self.gen.finish_reason is None:
            self.gen.finish_reason = "stop"
        self._constrain()

    def visible(self) -> str:
        """The part of the content that can be streamed now: never more than the final content will hold."""
        text = self.text
        cut = text.find(TOOL_OPEN)
        if cut >= 0:
            text = text[:cut]
        else:
            for marker in (TOOL_OPEN, *self.stops):
                for k in range(min(len(marker) - 1, len(text)), 0, -1):
                    if marker.startswith(text[-k:]):
                        text = text[:-k]
                        break
        if text.endswith("\n"):
            text = text[:-1]  # the newline before a tool call is not content
        return text.rstrip("\ufffd")


def split_output(text: str, forced_name: str | None = None) -> tuple[str, list[dict[str, Any]]]:
    """(content, OpenAI tool calls) of a chat completion's text. The content is what precedes the first call,
    less the newline the template puts before a call, so that re-rendering the message gives back the same
    text. A forced call (tool_choice required or named) whose arguments are not valid JSON is still a call of
    that tool, its arguments the raw text (OpenAI's arguments are not guaranteed to be valid JSON either)."""
    from .codec import parse_tool_calls

    _, calls = parse_tool_calls(text)
    if not calls and forced_name is not None:
        start = text.find(TOOL_OPEN)
        opening = call_opening(forced_name)
        if start >= 0 and text[start:].startswith(opening):
            body = text[start + len(opening) :]
            end = body.find("\n" + TOOL_END)
            body = body[:end] if end >= 0 else body
            body = body[:-1] if body.endswith("}") else body
            fn = {"name": forced_name, "arguments": body}  # unstripped: the message renders back as generated
            calls = [{"id": f"call_{uuid.uuid4().hex[:12]}", "type": "function", "function": fn}]
    if not calls:
        return text, []
    content = text[: text.find(TOOL_OPEN)]
    return (content[:-1] if content.endswith("\n") else content), calls
