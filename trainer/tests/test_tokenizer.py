"""Tokenizer: specials, chat template (Python == Jinja for HF consumers), assistant mask, save/load."""

from __future__ import annotations

from typing import Any

import pytest

from trainflow_trainer.tokenizer import IM_END, SPECIAL_TOKENS, Tokenizer, parse_tool_calls

TOOLS: list[dict[str, Any]] = [
    {
        "type": "function",
        "function": {
            "name": "python",
            "description": "run code",
            "parameters": {"type": "object", "properties": {"code": {"type": "string"}}},
        },
    }
]
CONV: list[dict[str, Any]] = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "  What is 2+2? é"},
    {
        "role": "assistant",
        "content": "",
        "tool_calls": [
            {"type": "function", "function": {"name": "python", "arguments": {"code": "print(2+2)"}}},
            {"type": "function", "function": {"name": "python", "arguments": '{"code": "print(1)"}'}},
        ],
    },
    {"role": "tool", "content": "4"},
    {"role": "tool", "content": "1"},
    {"role": "assistant", "content": " It is 4."},
]


def test_special_tokens_are_single_ids(tok):
    for t in SPECIAL_TOKENS:
        ids = tok.encode(t)
        assert ids == [tok.special_ids[t]]
    assert tok.decode(tok.encode("def f(x):\n    return x\n")) == "def f(x):\n    return x\n"


def test_assistant_mask_covers_exactly_the_assistant_turns(tok):
    r = tok.render_chat(CONV, tools=TOOLS)
    assert len(r.ids) == len(r.assistant_mask)
    assert r.ids == tok.encode(tok.chat_text(CONV, tools=TOOLS))  # one encode of the full text
    trained = tok.decode([i for i, m in zip(r.ids, r.assistant_mask) if m])
    expected = (
        '<tool_call>\n{"name": "python", "arguments": {"code": "print(2+2)"}}\n</tool_call>\n'
        '<tool_call>\n{"name": "python", "arguments": {"code": "print(1)"}}\n</tool_call>'
        + IM_END
        + " It is 4."
        + IM_END
    )
    assert trained == expected
    # Nothing from the user, system, tools or the role headers is trained.
    untrained = tok.decode([i for i, m in zip(r.ids, r.assistant_mask) if not m])
    assert "What is 2+2" in untrained and "<tool_response>\n4\n</tool_response>" in untrained
    assert "<|im_start|>assistant\n" in untrained


def test_python_template_equals_jinja_template(tok, tmp_path):
    from transformers import AutoTokenizer

    tok.save(tmp_path)
    hf = AutoTokenizer.from_pretrained(tmp_path)
    cases: list[tuple[list[dict[str, Any]], list[dict[str, Any]] | None]] = [
        (CONV, TOOLS),
        (CONV[1:], None),
        ([{"role": "user", "content": "hi"}], None),
    ]
    for messages, tools in cases:
        for gen in (False, True):
            ours = tok.chat_text(messages, tools=tools, add_generation_prompt=gen)
            # transformers types `tools` as list[dict | Callable], an invariant list it only reads, so a list of
            # dicts (what it documents) does not match; its stub, not this call, is off.
            theirs = hf.apply_chat_template(
                messages,
                tools=tools,  # type: ignore[arg-type]
                tokenize=False,
                add_generation_prompt=gen,
            )
            assert ours == theirs
    assert hf.eos_token_id == tok.eos_id and hf.pad_token_id == tok.pad_id
    assert hf.encode(tok.chat_text(CONV, TOOLS), add_special_tokens=False) == tok.render_chat(CONV, TOOLS).ids


def test_save_load_round_trip(tok, tmp_path):
    tok.save(tmp_path)
    again = Tokenizer.load(tmp_path)
    assert again.special_ids == tok.special_ids and again.vocab_size == tok.vocab_size
    assert again.render_chat(CONV, TOOLS).ids == tok.render_chat(CONV, TOOLS).ids


def test_parse_tool_calls_inverts_rendering():
    content, calls = parse_tool_calls(
        'Let me run it.\n<tool_call>\n{"name": "python", "arguments": {"code": "1"}}\n</tool_call><|im_end|>'
    )
    assert content == "Let me run it."
    assert calls == [{"type": "function", "function": {"name": "python", "arguments": {"code": "1"}}}]


def test_bad_messages_are_refused(tok):
    from trainflow_trainer.tokenizer import ChatFormatError

    with pytest.raises(ChatFormatError, match="unknown role"):
        tok.render_chat([{"role": "robot", "content": "x"}])
