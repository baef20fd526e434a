"""The CPU inference server: KV-cache decoding, sampling, the HTTP API and partial rollout across a reload.

The server runs as a real subprocess (`python -m trainflow_trainer.serve`) over committed checkpoints written
by `serve.fixture`; recorded log-probs are checked against a plain full-sequence forward of the same weights.
"""

from __future__ import annotations

import http.client
import json
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import torch

from trainflow_trainer.model import load_pretrained
from trainflow_trainer.serve.codec import parse_tool_calls
from trainflow_trainer.serve.engine import Engine, Generation, SamplingParams
from trainflow_trainer.serve.fixture import build
from trainflow_trainer.serve.runner import TransformerRunner
from trainflow_trainer.serve.weights import CheckpointError, load_checkpoint

TRAINER = Path(__file__).resolve().parents[1]
ADMIN = "admin-secret"


@pytest.fixture(scope="module")
def fix(tmp_path_factory):
    return build(tmp_path_factory.mktemp("serve"))


@pytest.fixture(scope="module")
def server(fix):
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "trainflow_trainer.serve",
            "--checkpoint",
            fix["checkpoints"][0],
            "--port",
            "0",
            "--admin-token",
            ADMIN,
        ],
        cwd=TRAINER,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line.startswith("TRAINFLOW_SERVE "), line
    info = json.loads(line.split(" ", 1)[1])
    yield info["port"]
    proc.terminate()
    proc.wait(10)


def post(port: int, path: str, body, token: str | None = None) -> tuple[int, dict]:
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    c.request("POST", path, body=body if isinstance(body, bytes) else json.dumps(body), headers=headers)
    r = c.getresponse()
    return r.status, json.loads(r.read())


def stream(port: int, path: str, body: dict):
    """Yields the parsed SSE events of a streaming request."""
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    c.request("POST", path, body=json.dumps({**body, "stream": True}), headers={"Content-Type": "application/json"})
    r = c.getresponse()
    assert r.status == 200 and r.getheader("Content-Type") == "text/event-stream"
    while True:
        line = r.readline()
        if not line:
            return
        line = line.strip()
        if line.startswith(b"data: "):
            data = line[6:]
            if data == b"[DONE]":
                return
            yield json.loads(data)


def full_logprobs(model, prompt: list[int], out: list[int], temperature: float = 1.0) -> list[float]:
    """Log-probs of `out` after `prompt` from one full forward (no cache): the trainer's view."""
    ids = torch.tensor([prompt + out])
    with torch.no_grad():
        logits = model(ids)[0].float()
    logp = torch.log_softmax(logits / temperature, dim=-1)
    return [float(logp[len(prompt) - 1 + k, t]) for k, t in enumerate(out)]


# ------------------------------------------------------------------------------------------------- engine


def test_kv_cache_logprobs_equal_full_forward_and_seed_reproduces(fix):
    model = load_pretrained(fix["checkpoints"][0])
    engine = Engine(TransformerRunner(model), version=7, eos_token_ids=())
    prompt = [5, 17, 33, 2, 90]
    params = SamplingParams(max_tokens=12, temperature=0.8, seed=3)
    toks = list(engine.generate(prompt, params))
    assert len(toks) == 12 and all(t.version == 7 for t in toks)
    expect = full_logprobs(model, prompt, [t.id for t in toks], 0.8)
    assert [t.logprob for t in toks] == pytest.approx(expect, abs=1e-4)
    again = list(engine.generate(prompt, params))
    assert [t.id for t in again] == [t.id for t in toks]
    other = list(engine.generate(prompt, SamplingParams(max_tokens=12, temperature=0.8, seed=4)))
    assert [t.id for t in other] != [t.id for t in toks]


def test_engine_swap_mid_generation_rebuilds_cache_under_new_weights(fix):
    m1, m2 = load_pretrained(fix["checkpoints"][0]), load_pretrained(fix["checkpoints"][1])
    engine = Engine(TransformerRunner(m1), version=1)
    prompt = [10, 11, 12]
    it = engine.generate(prompt, SamplingParams(max_tokens=10, seed=0, ignore_eos=True))
    toks = [next(it) for _ in range(4)]
    engine.swap(TransformerRunner(m2), 2)
    toks += list(it)
    assert [t.version for t in toks] == [1] * 4 + [2] * 6
    ids = [t.id for t in toks]
    lp1, lp2 = full_logprobs(m1, prompt, ids), full_logprobs(m2, prompt, ids)
    assert [t.logprob for t in toks[:4]] == pytest.approx(lp1[:4], abs=1e-4)
    assert [t.logprob for t in toks[4:]] == pytest.approx(lp2[4:], abs=1e-4)


def test_slot_store_decodes_many_sequences_as_a_full_forward_would(fix):
    """Three sequences of different lengths in one SlotKV; the middle one leaves, so the other two decode from
    non-contiguous slots (the gather path); then all three contiguous slots again. Every row's logits equal a
    full-sequence forward of that row alone."""
    model = load_pretrained(fix["checkpoints"][0])
    runner = TransformerRunner(model)
    kv = runner.new_kv()
    seqs = {kv.alloc(): [5, 17, 33], kv.alloc(): [8, 9, 10, 11, 12, 13, 14], kv.alloc(): list(range(40, 70))}
    assert sorted(seqs) == [0, 1, 2]
    for slot, ids in seqs.items():
        runner.prefill(ids, kv, slot)

    def check(slots: list[int], tokens: list[int]) -> None:
        logits = runner.decode(tokens, kv, slots)
        for row, (slot, t) in enumerate(zip(slots, tokens)):
            seqs[slot].append(t)
            with torch.no_grad():
                want = model(torch.tensor([seqs[slot]]))[0, -1].float()
            assert torch.allclose(logits[row], want, atol=1e-5), f"slot {slot}"

    check([0, 2], [3, 4])  # slot 1 idle: rows 0 and 2 gathered
    for step in range(3):
        check([0, 1, 2], [7 + step, 8 + step, 9 + step])
    assert [kv.length(s) for s in range(3)] == [len(seqs[s]) for s in range(3)]

    # Prefix reuse: a prompt extending slot 2's sequence copies its keys and computes only the new tokens.
    kv.release(2)  # finished, but its keys stay available as a prefix
    longer = seqs[2] + [11, 12, 13]
    slot = kv.alloc()
    assert slot not in (0, 1, 2)
    before = kv.computed_tokens
    logits = runner.prefill(longer, kv, slot)
    assert kv.computed_tokens - before == 3 and kv.length(slot) == len(longer)
    with torch.no_grad():
        want = model(torch.tensor([longer]))[0, -1].float()
    assert torch.allclose(logits, want, atol=1e-5)
    seqs[slot] = longer
    check([0, slot], [1, 2])


def test_concurrent_generations_are_batched_and_equal_their_solo_runs(fix):
    """Six threads generate at once: the engine steps them together (mean batch > 1), and each generation's
    tokens and log-probs equal what it gets alone on an idle engine (same seed)."""
    model = load_pretrained(fix["checkpoints"][0])
    prompts = [[5 + i, 17, 33 + 2 * i] + [9] * (3 * i) for i in range(6)]
    params = [SamplingParams(max_tokens=16, temperature=0.9, seed=100 + i, ignore_eos=True) for i in range(6)]
    solo = Engine(TransformerRunner(model), version=3)
    alone = [list(solo.generate(p, sp)) for p, sp in zip(prompts, params)]
    assert solo.stepped_rows == solo.steps  # one at a time

    def concurrently(engine: Engine) -> dict[int, list]:
        start = threading.Barrier(6)
        out: dict[int, list] = {}

        def work(i: int) -> None:
            start.wait()
            out[i] = list(engine.generate(prompts[i], params[i]))

        threads = [threading.Thread(target=work, args=(i,)) for i in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        return out

    engine = Engine(TransformerRunner(model), version=3)
    out = concurrently(engine)
    assert engine.stepped_rows == 6 * 16 and engine.steps < 6 * 16 / 1.5, (engine.steps, engine.stepped_rows)
    one_by_one = Engine(TransformerRunner(model, reuse_prefixes=False), version=3, max_batch=1)
    sequential = concurrently(one_by_one)
    assert one_by_one.steps == one_by_one.stepped_rows == 6 * 16
    for i in range(6):
        for got in (out[i], sequential[i]):
            assert [t.id for t in got] == [t.id for t in alone[i]]
            assert [t.logprob for t in got] == pytest.approx([t.logprob for t in alone[i]], abs=1e-5)
            assert all(t.version == 3 for t in got)


def test_n_choices_step_together_and_swap_rebuilds_all(fix):
    m1, m2 = load_pretrained(fix["checkpoints"][0]), load_pretrained(fix["checkpoints"][1])
    engine = Engine(TransformerRunner(m1), version=1)
    gens = [Generation([10, 11, 12 + i], SamplingParams(max_tokens=8, seed=i, ignore_eos=True)) for i in range(3)]
    it = engine.run_many(gens)
    for _ in range(3 * 3):  # three rounds of three choices
        next(it)
    assert engine.steps == 3
    engine.swap(TransformerRunner(m2), 2)
    list(it)
    assert engine.steps == 8 and engine.stepped_rows == 24
    for g in gens:
        assert [t.version for t in g.tokens] == [1] * 3 + [2] * 5
        ids = [t.id for t in g.tokens]
        assert [t.logprob for t in g.tokens[:3]] == pytest.approx(full_logprobs(m1, g.prompt_ids, ids)[:3], abs=1e-4)
        assert [t.logprob for t in g.tokens[3:]] == pytest.approx(full_logprobs(m2, g.prompt_ids, ids)[3:], abs=1e-4)


def test_tool_call_parsing():
    text = 'let me run it\n<tool_call>\n{"name": "python", "arguments": {"code": "print(1)"}}\n</tool_call>'
    content, calls = parse_tool_calls(text)
    assert content == "let me run it"
    assert calls[0]["function"] == {"name": "python", "arguments": '{"code": "print(1)"}'}
    assert calls[0]["id"].startswith("call_")
    assert parse_tool_calls("<tool_call>\nnot json\n</tool_call>") == ("<tool_call>\nnot json\n</tool_call>", [])


OPEN_BASH = '<tool_call>\n{"name": "bash", "arguments": '


@pytest.mark.parametrize(
    "generated",
    [
        "I will look.\n" + OPEN_BASH + '{"command": "ls"}}\n</tool_call>',
        OPEN_BASH + '{"command": "ls"}}\n</tool_call>' + "\n" + OPEN_BASH + '{"command": "pwd"}}\n</tool_call>',
        " plain  text, spaces kept \n",
    ],
)
def test_a_reply_renders_back_as_it_was_generated(tok, generated):
    """The message the chat API returns, sent back by the agent, renders to the generated text itself (so the
    next prompt's ids extend the sampled ones: no drift): tool-call arguments keep their own text."""
    from trainflow_trainer.serve.api import split_output

    content, calls = split_output(generated)
    message: dict[str, Any] = {"role": "assistant", "content": content if (content or not calls) else None}
    if calls:
        message["tool_calls"] = [json.loads(json.dumps(c)) for c in calls]  # as it travels
    text = tok.chat_text([{"role": "user", "content": "x"}, message])
    assert "<|im_start|>assistant\n" + generated + "<|im_end|>" in text


def test_arguments_in_another_layout_come_back_in_json_dumps_layout():
    """A call's arguments are re-serialised (json.dumps): the policy's history then shows its calls in the layout
    it was trained on. Kept after a trial of the model's own text: with it the demo's RL reward no longer rose
    (test/rl/demo-reward.test.ts seed 1: z -2.0 against 6.3), the tiny model's later turns degrading on its own
    odd spacing. The proxy's drift check (and fix, on the CPU engine) covers the re-tokenised turn."""
    _, calls = parse_tool_calls(OPEN_BASH + '{"command":"ls  -l"}}\n</tool_call>')
    assert calls[0]["function"]["arguments"] == '{"command": "ls  -l"}'


def test_a_forced_call_cut_short_renders_back_as_generated(tok):
    """tool_choice required: a call whose arguments were cut off (max_tokens) keeps them unstripped, so the
    rendered message starts with the generated text."""
    from trainflow_trainer.serve.api import split_output

    generated = OPEN_BASH + ' {"command": "ls '
    content, calls = split_output(generated, forced_name="bash")
    assert calls[0]["function"] == {"name": "bash", "arguments": ' {"command": "ls '}
    text = tok.chat_text(
        [{"role": "user", "content": "x"}, {"role": "assistant", "content": None, "tool_calls": calls}]
    )
    assert "<|im_start|>assistant\n" + generated in text


def test_corrupt_checkpoint_is_refused(fix, tmp_path):
    import shutil

    bad = tmp_path / "step-000001"
    shutil.copytree(fix["checkpoints"][0], bad)
    with open(bad / "model.safetensors", "r+b") as f:
        f.seek(200)
        f.write(b"\x00\x01\x02")
    with pytest.raises(CheckpointError, match="sha256"):
        load_checkpoint(str(bad))
    (bad / "COMMIT.json").unlink()
    with pytest.raises(CheckpointError, match="not committed"):
        load_checkpoint(str(bad))


# --------------------------------------------------------------------------------------------------- HTTP


def test_completions_text_and_ids_n_and_streaming_agree(server, fix):
    model = load_pretrained(fix["checkpoints"][0])
    code, r = post(server, "/v1/completions", {"prompt": "hello world", "max_tokens": 6, "n": 2, "seed": 5})
    assert code == 200 and len(r["choices"]) == 2
    prompt = r["prompt_token_ids"]
    for ch in r["choices"]:
        ids = ch["token_ids"]
        assert ch["logprobs"]["tokens"] == [f"token_id:{i}" for i in ids]
        assert ch["logprobs"]["token_logprobs"] == pytest.approx(full_logprobs(model, prompt, ids), abs=1e-4)
        assert ch["policy_versions"] == [1] * len(ids)
    assert r["choices"][0]["token_ids"] != r["choices"][1]["token_ids"]
    # The same request by token ids, streamed, gives the same tokens (seeded per choice).
    got: dict[int, list[int]] = {0: [], 1: []}
    for ev in stream(server, "/v1/completions", {"prompt": prompt, "max_tokens": 6, "n": 2, "seed": 5}):
        for ch in ev["choices"]:
            got[ch["index"]] += ch["token_ids"]
    assert got == {i: r["choices"][i]["token_ids"] for i in (0, 1)}


def test_chat_prompt_uses_the_trainer_template_and_allowed_ids(server, fix):
    from trainflow_trainer.tokenizer import Tokenizer

    tok = Tokenizer.load(fix["tokenizer"])
    msgs = [{"role": "user", "content": "run the tests"}]
    tools = [{"type": "function", "function": {"name": "python", "parameters": {"type": "object"}}}]
    allowed = list(fix["letters"].values()) + [fix["im_end"]]
    code, r = post(
        server,
        "/v1/chat/completions",
        {"messages": msgs, "tools": tools, "max_tokens": 8, "seed": 1, "allowed_token_ids": allowed},
    )
    assert code == 200
    assert r["prompt_token_ids"] == tok.render_chat(msgs, tools, add_generation_prompt=True).ids
    ch = r["choices"][0]
    assert set(ch["token_ids"]) <= set(allowed)
    text = ch["message"]["content"]
    assert set(text) <= set("XYZ") and tok.encode(text) == [i for i in ch["token_ids"] if i != fix["im_end"]]
    # Streaming chat: the content deltas concatenate to the non-streamed message.
    pieces, ids = [], []
    for ev in stream(
        server,
        "/v1/chat/completions",
        {"messages": msgs, "tools": tools, "max_tokens": 8, "seed": 1, "allowed_token_ids": allowed},
    ):
        for c in ev["choices"]:
            pieces.append(c["delta"].get("content") or "")
            ids += c.get("token_ids", [])
    assert "".join(pieces) == text and ids == ch["token_ids"]


def test_bad_requests_get_clear_4xx(server):
    code, r = post(server, "/v1/completions", b"{not json")
    assert code == 400 and "not valid JSON" in r["error"]["message"]
    code, r = post(server, "/v1/completions", {"prompt": "x", "max_tokens": "many"})
    assert code == 400 and "max_tokens" in r["error"]["message"]
    code, r = post(server, "/v1/chat/completions", {"messages": [{"role": "wizard", "content": "x"}]})
    assert code == 400 and "wizard" in r["error"]["message"]
    code, r = post(server, "/v1/completions", {"prompt": [1, 10**6]})
    assert code == 400 and "vocabulary" in r["error"]["message"]
    code, r = post(server, "/nowhere", {})
    assert code == 404


def test_admin_needs_token_and_reload_rejects_bad_path(server, tmp_path):
    assert post(server, "/pause", {})[0] == 401
    assert post(server, "/reload", {"path": "/x"}, token="wrong")[0] == 401
    code, r = post(server, "/reload", {"path": str(tmp_path / "missing")}, token=ADMIN)
    assert code == 400 and "missing" in r["error"]["message"]


def test_partial_rollout_reload_mid_generation(server, fix):
    """Pause mid-stream, reload step 2, resume: one response; tokens before/after carry versions 1/2 and
    log-probs of the weights that sampled them (the cache was rebuilt under the new weights)."""
    m1, m2 = load_pretrained(fix["checkpoints"][0]), load_pretrained(fix["checkpoints"][1])
    body = {"prompt": "the quick brown fox", "max_tokens": 40, "seed": 9, "ignore_eos": True}
    events = stream(server, "/v1/completions", body)
    toks: list[tuple[int, float, int]] = []
    prompt = None
    for ev in events:
        for ch in ev["choices"]:
            toks += list(
                zip(
                    ch["token_ids"],
                    ch["logprobs"]["token_logprobs"] if ch.get("logprobs") else [],
                    ch["policy_versions"],
                )
            )
        prompt = ev.get("prompt_token_ids", prompt)
        if len(toks) == 5:
            assert post(server, "/pause", {}, token=ADMIN)[0] == 200
            code, r = post(server, "/reload", {"path": fix["checkpoints"][1]}, token=ADMIN)
            assert code == 200 and r["policy_version"] == 2 and r["paused"] is True
            assert post(server, "/resume", {}, token=ADMIN)[0] == 200
    assert len(toks) == 40
    versions = [v for _, _, v in toks]
    k = versions.index(2)
    assert 5 <= k < 40 and versions == [1] * k + [2] * (40 - k)
    ids = [t for t, _, _ in toks]
    lps = [lp for _, lp, _ in toks]
    assert prompt is not None, "the stream never reported its prompt_token_ids"
    assert lps[:k] == pytest.approx(full_logprobs(m1, prompt, ids)[:k], abs=1e-4)
    assert lps[k:] == pytest.approx(full_logprobs(m2, prompt, ids)[k:], abs=1e-4)
    # Later requests see the new weights.
    code, r = post(server, "/v1/completions", {"prompt": "hi", "max_tokens": 2})
    assert r["choices"][0]["policy_versions"] == [2, 2]
    # Put step 1 back for other tests (explicit version).
    assert post(server, "/reload", {"path": fix["checkpoints"][0], "version": 1}, token=ADMIN)[0] == 200


def test_pause_holds_requests_until_resume(server):
    assert post(server, "/pause", {}, token=ADMIN)[0] == 200
    result: dict[str, tuple[int, dict]] = {}
    t = threading.Thread(
        target=lambda: result.update(r=post(server, "/v1/completions", {"prompt": "a", "max_tokens": 2}))
    )
    t.start()
    time.sleep(0.5)
    assert t.is_alive() and "r" not in result
    assert post(server, "/resume", {}, token=ADMIN)[0] == 200
    t.join(30)
    assert result["r"][0] == 200
