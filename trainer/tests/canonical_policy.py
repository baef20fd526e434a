"""A tiny policy whose sampled tokens re-tokenise to themselves, so that a recorded session shows no drift for
the right reason (not because the check was loosened).

A byte-level BPE's text has one canonical segmentation; a random model samples others ('ab' as 'a' 'b' where
the merges say 'ab'), and the agent's re-sent text tokenises to other ids: drift. Two parts take that away:

- the tokenizer (`char_tokenizer`): one token per printable ASCII character plus the chat specials and an
  `<unk>` for anything else, no merges. Every id sequence is then the only encoding of its text (a special's
  text encodes to the special), so a reply decoded to text and re-rendered by the chat template gives back
  the sampled ids.
- the weights (`train_policy`): the tiny model, SFT'd by the real `sft` stage for a few seconds to answer
  every assistant turn with one bash tool call (`REPLY_COMMAND`, the swe test repository's fix) and its
  `<|im_end|>`. A random model would also end a turn on `<|endoftext|>` now and then (the template closes a
  turn with `<|im_end|>`: real drift), and never produces a tool call mini-swe-agent accepts, so it never
  gets past its first step.
"""

from __future__ import annotations

import json
import string
import subprocess
import sys
from pathlib import Path
from typing import Any

from specs import job_spec
from tokenizers import AddedToken, decoders, models
from tokenizers import Tokenizer as HFTokenizer

from trainflow_trainer.tokenizer import SPECIAL_TOKENS, Tokenizer

TRAINER = Path(__file__).resolve().parents[1]
UNK = "<unk>"
# printable ASCII, tab and newline (no \r, \v, \f: nothing in a chat needs them)
CHARS = [c for c in string.printable if c not in "\r\x0b\x0c"]

REPLY_COMMAND = "sed -i 's/a - b/a + b/' calc/__init__.py"
BASH_TOOL = {  # mini-swe-agent's tool, and the scripted agent's
    "type": "function",
    "function": {
        "name": "bash",
        "description": "Execute a bash command",
        "parameters": {
            "type": "object",
            "properties": {"command": {"type": "string", "description": "The bash command to execute"}},
            "required": ["command"],
        },
    },
}
# what the trained policy says at every turn: the template's rendering of one bash call, then <|im_end|>
REPLY_TEXT = '<tool_call>\n{"name": "bash", "arguments": {"command": ' + json.dumps(REPLY_COMMAND) + "}}\n</tool_call>"

SFT_STEPS = 150


def char_tokenizer() -> Tokenizer:
    """Characters as tokens, no merges; the chat specials (and <unk>) are atomic special tokens."""
    specials = [*SPECIAL_TOKENS, UNK]
    vocab = {t: i for i, t in enumerate(specials)}
    for c in CHARS:
        vocab[c] = len(vocab)
    hf = HFTokenizer(models.BPE(vocab=vocab, merges=[], unk_token=UNK))
    hf.decoder = decoders.Fuse()  # tokens are joined as they are (no spaces between, no byte mapping)
    hf.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in specials])
    return Tokenizer(hf)


def conversation(system: str, user: str, turns: int, tool_output: str) -> list[dict[str, Any]]:
    """An agent session in which the assistant answers every turn with the one bash call."""
    call = {"type": "function", "function": {"name": "bash", "arguments": {"command": REPLY_COMMAND}}}
    messages: list[dict[str, Any]] = [{"role": "system", "content": system}, {"role": "user", "content": user}]
    for i in range(turns):
        messages.append({"role": "assistant", "content": "", "tool_calls": [call]})
        if i < turns - 1:
            messages.append({"role": "tool", "content": tool_output})
    return messages


def training_rows(task_prompt: str) -> list[dict[str, Any]]:
    """Sessions shaped like mini-swe-agent's (test/agents/run_mini.py) and the scripted agent's."""
    mini_obs = "<returncode>0</returncode>\n<output>\n</output>"  # LitellmModel's observation of a silent command
    mini_user = task_prompt + "\nFix it, then run: echo COMPLETE_TASK_AND_SUBMIT_FINAL_OUTPUT"
    return [
        {"messages": conversation("You can run bash commands.", mini_user, 3, mini_obs), "tools": [BASH_TOOL]},
        {"messages": conversation("You are a coding agent.\nBe brief.", task_prompt, 3, ""), "tools": [BASH_TOOL]},
    ]


def train_policy(folder: Path, task_prompt: str) -> tuple[Path, Path]:
    """SFTs the tiny model (hidden 64, 2 layers) on `training_rows` with the real sft stage; returns (its final
    committed checkpoint, the tokenizer.json)."""
    folder.mkdir(parents=True, exist_ok=True)
    tok = char_tokenizer()
    tok.save(folder / "tokenizer")
    data = folder / "sft.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in training_rows(task_prompt)))
    stage = {
        "name": "sft",
        "kind": "sft",
        "data": {"sources": [{"path": str(data)}], "seq_len": 2048},
        "train": {"steps": SFT_STEPS, "batch_size": 2, "lr": 1e-2, "warmup_steps": 10, "seed": 3},
        "checkpoint": {"every": SFT_STEPS},
    }
    model = {
        "init": {
            "preset": "tiny",
            "overrides": {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2},
        },
        "tokenizer": {"path": str(folder / "tokenizer" / "tokenizer.json")},
        "dtype": "fp32",
    }
    out = folder / "out"
    spec = job_spec(stage, model, str(out), folder / "work")
    (folder / "spec.json").write_text(json.dumps(spec))
    r = subprocess.run(
        [sys.executable, "-m", "trainflow_trainer.job", "--spec", str(folder / "spec.json")],
        cwd=TRAINER,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert r.returncode == 0, r.stderr[-4000:]
    return out / f"step-{SFT_STEPS:06d}", folder / "tokenizer" / "tokenizer.json"
