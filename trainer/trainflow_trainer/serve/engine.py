"""The generation engine: one model, many concurrent generations, stepped together, weight swaps between steps.

Each request's generations are Python generators that yield one token at a time (`run_many`). A consumer
that wants the next token registers its generations and waits; whoever finds the engine idle becomes the
stepper and advances *every* waiting generation in one batched decode step (group commit: no scheduler
thread, and a generation only advances when its consumer asked, so streaming applies back-pressure).

Each generation remembers the policy version its KV cache was built with. A weight swap takes effect at the
next step: generations whose cache is older rebuild it by re-running the prompt plus the tokens generated so
far under the new weights, and decoding continues: this is partial rollout. The agent sees one uninterrupted
response; every token carries the version of the weights that sampled it.

Pause stops new steps until resume (a step in flight finishes); requests keep their connections.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Protocol

import torch
from torch import Tensor

from ..trie.losses import nucleus, scaled_logits


class KVStore(Protocol):
    reused_tokens: int  # prompt tokens copied from a cached prefix
    computed_tokens: int  # prompt tokens run through the model

    def alloc(self) -> int: ...

    def release(self, slot: int) -> None: ...


class Runner(Protocol):
    """What the engine needs from a model: a KV store, a prefill into a slot and a batched one-token decode."""

    def new_kv(self) -> KVStore: ...

    def prefill(self, ids: list[int], kv: KVStore, slot: int) -> Tensor:
        """Runs `ids` from position 0 into `slot`; returns the logits of the last position [V] fp32."""
        ...

    def decode(self, tokens: list[int], kv: KVStore, slots: list[int]) -> Tensor:
        """Feeds token b at the end of slot b's cache; returns logits [B, V] fp32."""
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
    banned_token_ids: tuple[int, ...] = ()  # never sampled (tool_choice none bans the tool-call marker)
    top_logprobs: int = 0  # alternatives kept per token (OpenAI's top_logprobs), from the sampling distribution


@dataclass
class Token:
    id: int
    logprob: float  # log-prob of `id` under the distribution it was sampled from (see `sample`)
    version: int  # policy version of the weights that produced it
    top: list[tuple[int, float]] | None = None  # the most likely ids and their log-probs, when asked for


@dataclass
class Generation:
    """The state of one sequence being generated; `finish_reason` is set when it ends."""

    prompt_ids: list[int]
    params: SamplingParams
    tokens: list[Token] = field(default_factory=list)
    finish_reason: str | None = None


class EngineError(Exception):
    pass


@dataclass
class _Live:
    """Engine-side state of one generation: its RNG, its slot in a KV store and the version that filled it."""

    index: int  # its place among its request's generations
    gen: Generation
    rng: torch.Generator
    stops: set[int]
    kv: KVStore | None = None
    slot: int = -1
    version: int = -1
    logits: Tensor | None = None
    token: Token | None = None


@dataclass
class _Request:
    lives: list[_Live]
    done: bool = False
    error: BaseException | None = None


class Engine:
    def __init__(
        self,
        runner: Runner,
        version: int = 0,
        eos_token_ids: tuple[int, ...] = (),
        max_len: int = 4096,
        max_batch: int = 64,
    ):
        if max_batch < 1:
            raise ValueError(f"max_batch must be at least 1, got {max_batch}")
        self.max_batch = max_batch  # generations per step (vLLM's max_num_seqs); 1 steps them one at a time
        self._runner = runner
        self._kv = runner.new_kv()
        self.version = version
        self.eos_token_ids = tuple(eos_token_ids)
        self.max_len = max_len
        self._lock = threading.Lock()
        self._cv = threading.Condition(self._lock)
        self._waiting: list[_Request] = []
        self._stepping = False
        self.paused = False
        self.reloads = 0
        self.steps = 0  # batched steps run (for tests and metrics)
        self.stepped_rows = 0  # generations advanced over all steps: rows / steps is the mean batch

    # ---- admin -----------------------------------------------------------------------------------------
    def pause(self) -> None:
        with self._lock:
            self.paused = True

    def resume(self) -> None:
        with self._lock:
            self.paused = False
            self._cv.notify_all()

    def swap(self, runner: Runner, version: int | None = None) -> int:
        """Installs new weights for the next step. In-flight generations rebuild their cache under them."""
        kv = runner.new_kv()
        with self._lock:
            self._runner, self._kv = runner, kv
            self.version = self.version + 1 if version is None else version
            self.reloads += 1
            return self.version

    def stats(self) -> dict:
        """Batched steps run, the mean generations per step, and the share of prompt tokens reused from cache."""
        reused, computed = self._kv.reused_tokens, self._kv.computed_tokens
        return {
            "steps": self.steps,
            "mean_batch": self.stepped_rows / self.steps if self.steps else 0.0,
            "prefix_reuse": reused / (reused + computed) if reused + computed else 0.0,
        }

    # ---- generation ------------------------------------------------------------------------------------
    def generate(self, prompt_ids: list[int], params: SamplingParams) -> Iterator[Token]:
        """Yields the tokens of one generation as they are sampled."""
        yield from self.run(Generation(list(prompt_ids), params))

    def run(self, gen: Generation) -> Iterator[Token]:
        for _, token in self.run_many([gen]):
            yield token

    def run_many(self, gens: list[Generation]) -> Iterator[tuple[int, Token]]:
        """Advances the generations together (one batched step per round); yields (index, token) per token."""
        lives = [self._live(i, g) for i, g in enumerate(gens)]
        try:
            active = [lv for lv in lives if not self._finished(lv)]
            while active:
                self._next_tokens(active)
                for lv in active:
                    assert lv.token is not None
                    lv.gen.tokens.append(lv.token)
                    yield lv.index, lv.token
                    if lv.token.id in lv.stops:
                        lv.gen.finish_reason = "stop"
                active = [lv for lv in active if not self._finished(lv)]
        finally:
            for lv in lives:
                if lv.kv is not None:
                    lv.kv.release(lv.slot)
                    lv.kv = None

    def _live(self, index: int, gen: Generation) -> _Live:
        p = gen.params
        if not gen.prompt_ids:
            raise EngineError("the prompt is empty: give at least one token")
        if len(gen.prompt_ids) >= self.max_len:
            raise EngineError(f"the prompt has {len(gen.prompt_ids)} tokens; this server's limit is {self.max_len}")
        rng = torch.Generator().manual_seed(p.seed if p.seed is not None else torch.seed() % 2**63)
        stops = set(p.stop_token_ids) | (set() if p.ignore_eos else set(self.eos_token_ids))
        return _Live(index, gen, rng, stops)

    def _finished(self, lv: _Live) -> bool:
        g = lv.gen
        if g.finish_reason is None and (
            len(g.tokens) >= g.params.max_tokens or len(g.prompt_ids) + len(g.tokens) >= self.max_len
        ):
            g.finish_reason = "length"
        return g.finish_reason is not None

    def _next_tokens(self, lives: list[_Live]) -> None:
        """Blocks until each of `lives` has its next token in `.token`, stepping batches while nobody else is.

        A consumer that finds the engine idle steps the oldest waiting requests (its own may have to wait for a
        later step when max_batch is reached, so it keeps going until its own request is done).
        """
        req = _Request(lives)
        with self._cv:
            self._waiting.append(req)
        while True:
            with self._cv:
                while not req.done and (self._stepping or self.paused):
                    self._cv.wait()
                if req.done:
                    break
                batch = self._take_batch()
                self._stepping = True
                runner, kv, version = self._runner, self._kv, self.version
            try:
                self._step([lv for r in batch for lv in r.lives], runner, kv, version)
            except BaseException as e:  # every consumer in the batch hears of it
                for r in batch:
                    r.error = e
            finally:
                with self._cv:
                    self._stepping = False
                    for r in batch:
                        r.done = True
                    self._cv.notify_all()
        if req.error is not None:
            raise req.error

    def _take_batch(self) -> list[_Request]:
        """The oldest waiting requests, up to max_batch generations (always at least one request)."""
        batch: list[_Request] = []
        rows = 0
        while self._waiting and (not batch or rows + len(self._waiting[0].lives) <= self.max_batch):
            req = self._waiting.pop(0)
            batch.append(req)
            rows += len(req.lives)
        return batch

    def _step(self, lives: list[_Live], runner: Runner, kv: KVStore, version: int) -> None:
        decode: list[_Live] = []
        for lv in lives:
            if lv.version != version or lv.kv is not kv:
                # New weights (or the first token): rebuild the cache from everything so far under them.
                if lv.kv is not None:
                    lv.kv.release(lv.slot)
                lv.kv, lv.slot = kv, kv.alloc()
                lv.logits = runner.prefill(lv.gen.prompt_ids + [t.id for t in lv.gen.tokens], kv, lv.slot)
                lv.version = version
            else:
                decode.append(lv)
        if decode:
            decode.sort(key=lambda lv: lv.slot)  # contiguous slots decode without a gather
            logits = runner.decode([lv.gen.tokens[-1].id for lv in decode], kv, [lv.slot for lv in decode])
            for lv, row in zip(decode, logits):
                lv.logits = row
        for lv in lives:
            assert lv.logits is not None
            p = lv.gen.params
            tok, logprob, logp = draw(lv.logits, p, lv.rng)
            lv.token = Token(tok, logprob, version, top_of(logp, p.top_logprobs) if p.top_logprobs else None)
        self.steps += 1
        self.stepped_rows += len(lives)


def sample(logits: Tensor, params: SamplingParams, rng: torch.Generator) -> tuple[int, float]:
    """Samples one token; returns (id, log-prob under the distribution it was drawn from)."""
    tok, logprob, _ = draw(logits, params, rng)
    return tok, logprob


LOGPROB_FLOOR = -9999.0  # what an impossible alternative reports (JSON has no -inf; vLLM uses the same floor)


def top_of(logp: Tensor, k: int) -> list[tuple[int, float]]:
    """The k most likely ids of a log-prob vector, most likely first."""
    vals, ids = torch.topk(logp, min(k, logp.shape[-1]))
    return [(int(i), max(float(v), LOGPROB_FLOOR)) for v, i in zip(vals, ids)]


def draw(logits: Tensor, params: SamplingParams, rng: torch.Generator) -> tuple[int, float, Tensor]:
    """Samples one token; returns (id, its log-prob, the whole log-prob vector it was drawn from).

    That distribution is the model's after `allowed_token_ids` (when given), divided by the temperature and
    restricted to the top-p nucleus, renormalised: the trainer recomputes exactly this one
    (trie/losses.py `sampling_logprobs`, the same `scaled_logits` and `nucleus`), so the importance ratio of
    an on-policy token is 1 for every temperature and top_p. temperature 0 means greedy, and the reported
    log-prob is then that of the unscaled, untruncated distribution (the trainer's at temperature ≤ 0 too).
    """
    logits = logits.float()
    if params.allowed_token_ids is not None:
        masked = torch.full_like(logits, float("-inf"))
        idx = torch.tensor(params.allowed_token_ids, dtype=torch.long)
        masked[idx] = logits[idx]
        logits = masked
    if params.banned_token_ids:
        logits = logits.clone()
        logits[torch.tensor(params.banned_token_ids, dtype=torch.long)] = float("-inf")
    if params.temperature <= 0:
        logp = torch.log_softmax(logits, dim=-1)
        tok = int(torch.argmax(logits))
        return tok, float(logp[tok]), logp
    z = scaled_logits(logits, params.temperature)
    if params.top_p < 1.0:
        z = z.masked_fill(~nucleus(z, params.top_p), float("-inf"))
    logp = torch.log_softmax(z, dim=-1)
    tok = int(torch.multinomial(logp.exp(), 1, generator=rng))
    return tok, float(logp[tok]), logp


RunnerFactory = Callable[[str], tuple[Runner, int]]
