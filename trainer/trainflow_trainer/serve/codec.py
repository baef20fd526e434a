"""Text ⇄ token ids for the server, on top of the trainer's tokenizer (so server and trainer agree token for
token): plain encode/decode, the trainer's ChatML chat template, and tool calls in OpenAI shape parsed from
`<tool_call>\n{json}\n</tool_call>`.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..contract import ChoiceTokens, ResponseTokens
from ..tokenizer import ENDOFTEXT, IM_END, TOOL_CALL, ChatFormatError, Tokenizer
from ..tokenizer import parse_tool_calls as _parse_tool_calls

TOOL_OPEN = TOOL_CALL


def choice_tokens(token_ids: list[int], policy_versions: list[int]) -> dict[str, Any]:
    """A choice's token extension (the contract's ChoiceTokens, src/contract/tokens.ts: what the proxy reads)."""
    return ChoiceTokens(token_ids=token_ids, policy_versions=policy_versions).model_dump(exclude_none=True)


def response_tokens(prompt_token_ids: list[int]) -> dict[str, Any]:
    """A response's token extension (the contract's ResponseTokens): the prompt as the server tokenised it."""
    return ResponseTokens(prompt_token_ids=prompt_token_ids).model_dump(exclude_none=True)


class BadRequest(Exception):
    """A malformed request; the message names the field and the fix (HTTP 400)."""


@dataclass
class Codec:
    tokenizer: Tokenizer

    @classmethod
    def from_file(cls, path: str | Path) -> Codec:
        return cls(Tokenizer.load(path))

    @property
    def vocab_size(self) -> int:
        return self.tokenizer.vocab_size

    @property
    def eos_token_ids(self) -> tuple[int, ...]:
        return (self.tokenizer.special_ids[IM_END], self.tokenizer.special_ids[ENDOFTEXT])

    def encode(self, text: str) -> list[int]:
        return self.tokenizer.encode(text)

    def decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids) if ids else ""

    def decode_output(self, ids: list[int]) -> str:
        """Generated text as the agent sees it: end-of-turn tokens dropped, tool-call markup kept."""
        eos = set(self.eos_token_ids)
        return self.decode([i for i in ids if i not in eos])

    def encode_chat(self, messages: Any, tools: Any, add_generation_prompt: bool = True) -> list[int]:
        if not isinstance(messages, list) or not messages:
            raise BadRequest("field 'messages' must be a non-empty list of {role, content} objects")
        if tools is not None and not isinstance(tools, list):
            raise BadRequest("field 'tools' must be a list of tool definitions")
        try:
            return self.tokenizer.render_chat(messages, tools or None, add_generation_prompt=add_generation_prompt).ids
        except (ChatFormatError, TypeError, KeyError) as e:
            raise BadRequest(f"field 'messages': {e}") from e


def parse_tool_calls(text: str) -> tuple[str, list[dict[str, Any]]]:
    """(content without tool-call markup, OpenAI tool_calls with ids and JSON-string arguments)."""
    content, calls = _parse_tool_calls(text)
    out = []
    for c in calls:
        args = c["function"]["arguments"]
        out.append(
            {
                "id": f"call_{uuid.uuid4().hex[:12]}",
                "type": "function",
                "function": {
                    "name": c["function"]["name"],
                    "arguments": args if isinstance(args, str) else json.dumps(args),
                },
            }
        )
    return (content if out else text), out
