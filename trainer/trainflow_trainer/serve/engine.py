"""The generation engine: one model, many concurrent generations, weight swaps between tokens.

Every generation is a Python generator that yields one token at a time. Between two tokens it takes the
engine lock, so a weight reload (which also takes the lock) always lands *between* tokens of every
in-flight generation. Each generation remembers the policy version its KV cache was built with; when the
engine's version moved on (a reload happened), the cache is rebuilt by re-running the prompt plus the
tokens generated so far under the new weights, and decoding continues: this is partial rollout. The agent
sees one uninterrupted response; every token carries the version of the weights that sampled it.

Pause blocks generations at their next token boundary until resume; requests keep their connections.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Callable, Iterator, Protocol

import torch
from torch import Tensor


class Runner(Protocol):
    """What the engine needs from a model: a prefill that builds a cache and a one-token decode step."""

    def prefill(self, ids: list[int]) -> tuple[Tensor, object]:
        """Runs `ids` from position 0; returns (logits of the last position [V] fp32, cache)."""
        ...

    def decode(self, token: int, position: int, cache: object) -> tuple[Tensor, object]:
        """Feeds one token at `position`; returns (logits [V] fp32, cache)."""
        ...


@dataclass
class SamplingParams:
    max_tokens: int = 16
    temperature: float = 1.0
    top_p: float = 1.0
    seed: int | None = None
    stop_token_ids: tuple[int, ...] = ()
    ignore_eos: bool = False
    allowed_token_ids: tuple[int, ...] | None = None  # vLLM's allowed_token_ids: sample only among these


@dataclass
class Token:
    id: int
    logprob: float  # log-prob of `id` under the distribution it was sampled from (after temperature)
    version: int  # policy version of the weights that produced it


@dataclass
class Generation:
    """The state of one sequence being generated; `finish_reason` is set when it ends."""

    prompt_ids: list[int]
    params: SamplingParams
    tokens: list[Token] = field(default_factory=list)
    finish_reason: str | None = None


class EngineError(Exception):
    pass


class Engine:
    def __init__(self, runner: Runner, version: int = 0, eos_token_ids: tuple[int, ...] = (), max_len: int = 4096):
        self._runner = runner
        self.version = version
        self.eos_token_ids = tuple(eos_token_ids)
        self.max_len = max_len
        self._lock = threading.Lock()
        self._unpaused = threading.Condition(self._lock)
        self.paused = False
        self.reloads = 0

    # ---- admin -----------------------------------------------------------------------------------------
    def pause(self) -> None:
        with self._lock:
            self.paused = True

    def resume(self) -> None:
        with self._lock:
            self.paused = False
            self._unpaused.notify_all()

    def swap(self, runner: Runner, version: int | None = None) -> int:
        """Installs new weights between tokens. In-flight generations rebuild their cache at their next token."""
        with self._lock:
            self._runner = runner
            self.version = self.version + 1 if version is None else version
            self.reloads += 1
            return self.version

    # ---- generation ------------------------------------------------------------------------------------
    def generate(self, prompt_ids: list[int], params: SamplingParams) -> Iterator[Token]:
        """Yields tokens one by one; the Generation's finish_reason is available via `run`."""
        gen = Generation(list(prompt_ids), params)
        yield from self.run(gen)

    def run(self, gen: Generation) -> Iterator[Token]:
        params = gen.params
        if not gen.prompt_ids:
            raise EngineError("the prompt is empty: give at least one token")
        if len(gen.prompt_ids) >= self.max_len:
            raise EngineError(f"the prompt has {len(gen.prompt_ids)} tokens; this server's limit is {self.max_len}")
        rng = torch.Generator().manual_seed(params.seed if params.seed is not None else torch.seed() % 2**63)
        stops = set(params.stop_token_ids) | (set() if params.ignore_eos else set(self.eos_token_ids))
        cache: object = None
        cache_version = -1
        logits: Tensor | None = None
        while True:
            if len(gen.tokens) >= params.max_tokens:
                gen.finish_reason = "length"
                return
            if len(gen.prompt_ids) + len(gen.tokens) >= self.max_len:
                gen.finish_reason = "length"
                return
            with self._lock:
                while self.paused:
                    self._unpaused.wait()
                runner, version = self._runner, self.version
                if cache_version != version:
                    # New weights (or first token): rebuild the cache from everything so far under them.
                    ids = gen.prompt_ids + [t.id for t in gen.tokens]
                    logits, cache = runner.prefill(ids)
                    cache_version = version
                elif gen.tokens:
                    logits, cache = runner.decode(gen.tokens[-1].id, len(gen.prompt_ids) + len(gen.tokens) - 1, cache)
                assert logits is not None
                tok = sample(logits, params, rng)
            token = Token(tok[0], tok[1], version)
            gen.tokens.append(token)
            yield token
            if token.id in stops:
                gen.finish_reason = "stop"
                return


def sample(logits: Tensor, params: SamplingParams, rng: torch.Generator) -> tuple[int, float]:
    """Samples one token; returns (id, log-prob under the distribution it was drawn from).

    That distribution is the model's after temperature and after `allowed_token_ids` (when given).

    temperature 0 means greedy, and the reported log-prob is then that of the unscaled distribution.
    top_p truncates the candidates for sampling but the log-prob stays that of the full (scaled)
    distribution, as vLLM reports it and as the trainer recomputes it.
    """
    logits = logits.float()
    if params.allowed_token_ids is not None:
        masked = torch.full_like(logits, float("-inf"))
        idx = torch.tensor(params.allowed_token_ids, dtype=torch.long)
        masked[idx] = logits[idx]
        logits = masked
    if params.temperature <= 0:
        logp = torch.log_softmax(logits, dim=-1)
        tok = int(torch.argmax(logits))
        return tok, float(logp[tok])
    logp = torch.log_softmax(logits / params.temperature, dim=-1)
    probs = logp.exp()
    if params.top_p < 1.0:
        sorted_p, order = torch.sort(probs, descending=True)
        keep = torch.cumsum(sorted_p, dim=0) - sorted_p < params.top_p
        cut = torch.zeros_like(probs)
        cut[order[keep]] = probs[order[keep]]
        probs = cut
    tok = int(torch.multinomial(probs, 1, generator=rng))
    return tok, float(logp[tok])


RunnerFactory = Callable[[str], tuple[Runner, int]]
