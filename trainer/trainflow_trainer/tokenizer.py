"""Tokenizer: a byte-level BPE (HF `tokenizers`, `tokenizer.json`) plus a ChatML chat template with tools.

The chat template is implemented in Python (`Tokenizer.render_chat`) so it can return, with the token ids,
a per-token mask of what the assistant wrote — the SFT loss mask — without re-tokenising anything. The same
template is saved as Jinja in `tokenizer_config.json` for transformers/vLLM/SGLang (a test checks the two
render the same text).

Layout (Qwen2.5 style):
    <|im_start|>system\n{system}[\n\n# Tools ...<tools>{one JSON per line}</tools>]<|im_end|>\n
    <|im_start|>user\n{content}<|im_end|>\n
    <|im_start|>assistant\n{content}[\n]<tool_call>\n{"name": ..., "arguments": {...}}\n</tool_call><|im_end|>\n
    <|im_start|>user\n<tool_response>\n{tool output}\n</tool_response><|im_end|>\n
        (consecutive tool messages share one user turn)
Assistant mask: the assistant's content, tool calls and closing <|im_end|>; never the `<|im_start|>assistant\n`
header or anything from other roles.

The rendered text is encoded once (so the ids equal what a server gets from the same template) and the mask
comes from each token's character offsets.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tokenizers import Tokenizer as HFTokenizer
from tokenizers import decoders, models, pre_tokenizers, trainers

ENDOFTEXT = "<|endoftext|>"
IM_START = "<|im_start|>"
IM_END = "<|im_end|>"
TOOL_CALL = "<tool_call>"
TOOL_CALL_END = "</tool_call>"
TOOL_RESPONSE = "<tool_response>"
TOOL_RESPONSE_END = "</tool_response>"
PAD = "<|pad|>"
SPECIAL_TOKENS = [ENDOFTEXT, IM_START, IM_END, TOOL_CALL, TOOL_CALL_END, TOOL_RESPONSE, TOOL_RESPONSE_END, PAD]

TOKENIZER_FILE = "tokenizer.json"
TOKENIZER_CONFIG_FILE = "tokenizer_config.json"

TOOLS_PREAMBLE = (
    "\n\n# Tools\n\nYou may call one or more functions to assist with the user query.\n\n"
    "You are provided with function signatures within <tools></tools> XML tags:\n<tools>"
)
TOOLS_POSTAMBLE = (
    "\n</tools>\n\nFor each function call, return a json object with function name and arguments within "
    '<tool_call></tool_call> XML tags:\n<tool_call>\n{"name": <function-name>, "arguments": <args-json-object>}\n'
    "</tool_call>"
)
DEFAULT_SYSTEM = "You are a helpful coding assistant."

# Jinja rendering of exactly the layout above, for HF-compatible consumers (vLLM, SGLang, transformers).
CHAT_TEMPLATE_JINJA = (
    "{%- set ns = namespace(system=" + json.dumps(DEFAULT_SYSTEM) + ", start=0) -%}"
    "{%- if messages and messages[0]['role'] == 'system' -%}"
    "{%- set ns.system = messages[0]['content'] -%}{%- set ns.start = 1 -%}"
    "{%- endif -%}"
    "{%- if tools or ns.start == 1 -%}"
    "{{- '<|im_start|>system\\n' + ns.system -}}"
    "{%- if tools -%}{{- " + json.dumps(TOOLS_PREAMBLE) + " -}}"
    "{%- for tool in tools -%}{{- '\\n' + (tool | tojson) -}}{%- endfor -%}"
    "{{- " + json.dumps(TOOLS_POSTAMBLE) + " -}}{%- endif -%}"
    "{{- '<|im_end|>\\n' -}}"
    "{%- endif -%}"
    "{%- for message in messages[ns.start:] -%}"
    "{%- if message['role'] == 'user' -%}{{- '<|im_start|>user\\n' + message['content'] + '<|im_end|>\\n' -}}"
    "{%- elif message['role'] == 'system' -%}{{- '<|im_start|>system\\n' + message['content'] + '<|im_end|>\\n' -}}"
    "{%- elif message['role'] == 'assistant' -%}"
    "{{- '<|im_start|>assistant\\n' + (message['content'] or '') -}}"
    "{%- for tc in (message['tool_calls'] or []) -%}"
    "{%- set f = tc['function'] if tc['function'] is defined else tc -%}"
    "{%- if loop.first and not message['content'] -%}{{- '<tool_call>\\n' -}}"
    "{%- else -%}{{- '\\n<tool_call>\\n' -}}{%- endif -%}"
    "{{- '{\"name\": \"' + f['name'] + '\", \"arguments\": ' -}}"
    "{%- if f['arguments'] is string -%}{{- f['arguments'] -}}{%- else -%}{{- f['arguments'] | tojson -}}{%- endif -%}"
    "{{- '}\\n</tool_call>' -}}"
    "{%- endfor -%}"
    "{{- '<|im_end|>\\n' -}}"
    "{%- elif message['role'] == 'tool' -%}"
    "{%- if loop.first or loop.previtem['role'] != 'tool' -%}{{- '<|im_start|>user' -}}{%- endif -%}"
    "{{- '\\n<tool_response>\\n' + message['content'] + '\\n</tool_response>' -}}"
    "{%- if loop.last or loop.nextitem['role'] != 'tool' -%}{{- '<|im_end|>\\n' -}}{%- endif -%}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\\n' -}}{%- endif -%}"
)


@dataclass
class RenderedChat:
    ids: list[int]
    assistant_mask: list[bool]  # True where the assistant produced the token (the SFT loss targets)

    @property
    def num_assistant_tokens(self) -> int:
        return sum(self.assistant_mask)


class ChatFormatError(ValueError):
    pass


def _tool_call_json(call: dict) -> str:
    """`{"name": ..., "arguments": {...}}` from an OpenAI-style tool call (or a bare {name, arguments})."""
    f = call.get("function", call)
    if "name" not in f:
        raise ChatFormatError(f"tool call without a name: {call!r}")
    args = f.get("arguments", {})
    args_json = args if isinstance(args, str) else json.dumps(args, ensure_ascii=False)
    return '{"name": ' + json.dumps(f["name"], ensure_ascii=False) + ', "arguments": ' + args_json + "}"


TOOL_CALL_RE = re.compile(re.escape(TOOL_CALL) + r"\n(.*?)\n" + re.escape(TOOL_CALL_END), re.S)


def parse_tool_calls(text: str) -> tuple[str, list[dict]]:
    """Splits an assistant completion into its text and OpenAI-style tool calls (unparseable ones skipped)."""
    calls = []
    for m in TOOL_CALL_RE.finditer(text):
        try:
            obj = json.loads(m.group(1))
            calls.append({"type": "function", "function": {"name": obj["name"], "arguments": obj.get("arguments", {})}})
        except (json.JSONDecodeError, KeyError, TypeError):
            continue
    content = TOOL_CALL_RE.sub("", text).replace(IM_END, "").strip()
    return content, calls


class Tokenizer:
    def __init__(self, tok: HFTokenizer):
        self.tok = tok
        ids = {}
        for t in SPECIAL_TOKENS:
            i = tok.token_to_id(t)
            if i is None:
                raise ValueError(f"tokenizer lacks the special token {t!r}; train it with tokenizer.train_tokenizer")
            ids[t] = i
        self.special_ids = ids
        self.endoftext_id = ids[ENDOFTEXT]
        self.im_start_id = ids[IM_START]
        self.im_end_id = ids[IM_END]
        self.pad_id = ids[PAD]
        self.eos_id = self.im_end_id  # a chat turn ends generation

    @property
    def vocab_size(self) -> int:
        return self.tok.get_vocab_size(with_added_tokens=True)

    def encode(self, text: str) -> list[int]:
        return self.tok.encode(text, add_special_tokens=False).ids

    def decode(self, ids: Iterable[int], skip_special_tokens: bool = False) -> str:
        return self.tok.decode(list(ids), skip_special_tokens=skip_special_tokens)

    # ---------------------------------------------------------------------------------------- chat

    def _segments(
        self, messages: list[dict], tools: list[dict] | None, add_generation_prompt: bool
    ) -> Iterator[tuple[str, bool]]:
        """Yields (text, is_assistant) segments of the rendered conversation."""
        if not isinstance(messages, list) or not all(isinstance(m, dict) for m in messages):
            raise ChatFormatError("messages must be a list of {role, content} objects")
        start = 0
        system = DEFAULT_SYSTEM
        if messages and messages[0].get("role") == "system":
            system, start = messages[0].get("content") or "", 1
        if tools or start == 1:
            text = f"{IM_START}system\n{system}"
            if tools:
                text += (
                    TOOLS_PREAMBLE + "".join("\n" + json.dumps(t, ensure_ascii=False) for t in tools) + TOOLS_POSTAMBLE
                )
            yield text + f"{IM_END}\n", False
        rest = messages[start:]
        for i, m in enumerate(rest):
            role, content = m.get("role"), m.get("content")
            if role in ("user", "system"):
                if not isinstance(content, str):
                    raise ChatFormatError(f"message {i + start}: {role} content must be a string")
                yield f"{IM_START}{role}\n{content}{IM_END}\n", False
            elif role == "assistant":
                yield f"{IM_START}assistant\n", False
                body = content or ""
                for j, call in enumerate(m.get("tool_calls") or []):
                    sep = "" if (j == 0 and not body) else "\n"
                    body += f"{sep}{TOOL_CALL}\n{_tool_call_json(call)}\n{TOOL_CALL_END}"
                yield body + IM_END, True
                yield "\n", False
            elif role == "tool":
                if not isinstance(content, str):
                    raise ChatFormatError(f"message {i + start}: tool content must be a string")
                first = i == 0 or rest[i - 1].get("role") != "tool"
                last = i == len(rest) - 1 or rest[i + 1].get("role") != "tool"
                if first:
                    yield f"{IM_START}user", False
                yield f"\n{TOOL_RESPONSE}\n{content}\n{TOOL_RESPONSE_END}", False
                if last:
                    yield f"{IM_END}\n", False
            else:
                raise ChatFormatError(f"message {i + start}: unknown role {role!r} (system, user, assistant, tool)")
        if add_generation_prompt:
            yield f"{IM_START}assistant\n", False

    def chat_text(
        self, messages: list[dict], tools: list[dict] | None = None, add_generation_prompt: bool = False
    ) -> str:
        return "".join(t for t, _ in self._segments(messages, tools, add_generation_prompt))

    def render_chat(
        self, messages: list[dict], tools: list[dict] | None = None, add_generation_prompt: bool = False
    ) -> RenderedChat:
        """Token ids of the whole rendered text (encoded at once, so identical to what a server tokenises)
        and the assistant mask, from each token's character span: a token is the assistant's when it lies
        inside an assistant segment (a token straddling a boundary, which needs odd whitespace, is not)."""
        text, spans, pos = "", [], 0
        for seg, is_assistant in self._segments(messages, tools, add_generation_prompt):
            if is_assistant:
                spans.append((pos, pos + len(seg)))
            text += seg
            pos += len(seg)
        enc = self.tok.encode(text, add_special_tokens=False)
        mask = []
        k = 0
        for start, end in enc.offsets:
            while k < len(spans) and spans[k][1] <= start:
                k += 1
            mask.append(k < len(spans) and spans[k][0] <= start and end <= spans[k][1] and end > start)
        return RenderedChat(list(enc.ids), mask)

    # ---------------------------------------------------------------------------------------- files

    def save(self, directory: str | os.PathLike) -> list[str]:
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        self.tok.save(str(d / TOKENIZER_FILE))
        config = {
            "tokenizer_class": "PreTrainedTokenizerFast",
            "chat_template": CHAT_TEMPLATE_JINJA,
            "bos_token": None,
            "eos_token": IM_END,
            "pad_token": PAD,
            "unk_token": None,
            "model_max_length": 1_000_000,
            "clean_up_tokenization_spaces": False,
            "special_token_ids": self.special_ids,
            "additional_special_tokens": [t for t in SPECIAL_TOKENS if t not in (IM_END, PAD)],
        }
        (d / TOKENIZER_CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n")
        return [TOKENIZER_FILE, TOKENIZER_CONFIG_FILE]

    @classmethod
    def load(cls, path: str | os.PathLike) -> Tokenizer:
        """From a folder holding tokenizer.json, or the tokenizer.json file itself."""
        p = Path(path)
        if p.is_dir():
            p = p / TOKENIZER_FILE
        if not p.is_file():
            raise FileNotFoundError(f"{p}: no tokenizer.json")
        return cls(HFTokenizer.from_file(str(p)))


def train_tokenizer(texts: Iterable[str], vocab_size: int = 4096, min_frequency: int = 2) -> Tokenizer:
    """A byte-level BPE trained locally from `texts` (no download); special tokens take ids 0..7."""
    tok = HFTokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    return Tokenizer(tok)


def chat_texts_for_training(conversations: Iterable[dict[str, Any]]) -> Iterable[str]:
    """Plain text of conversations (for tokenizer training), without special tokens."""
    for conv in conversations:
        for m in conv.get("messages", []):
            if m.get("content"):
                yield m["content"]
            for call in m.get("tool_calls") or []:
                yield _tool_call_json(call)
