"""The reference agent: a multi-turn tool-using loop over an OpenAI-compatible endpoint.

Each turn sends the conversation (and the task's tools) to the endpoint. An answer without tool calls ends
the episode; otherwise every tool call of the turn runs — several at once in a thread pool when the model
asked for several — and their responses are appended in the order of the calls. The episode also ends at
`max_turns` model turns. The final conversation is scored by the task's verifier.

    agent = Agent(ChatClient(base_url, api_key), Sandbox(), max_turns=4)
    episode = agent.run(task)     # Episode(reward=1.0, turns=2, tool_calls=1, parallel_turns=0, ...)
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Any

from ..sandbox import Sandbox
from ..tasks import Task, verify
from .client import ChatClient, ChatError
from .tools import SWE_TOOLS, ToolBox


@dataclass
class Episode:
    task_id: str
    messages: list[dict]
    reward: float
    passed: bool
    verdict: str
    stop: str  # "answer" | "submit" | "max_turns" | "error"
    turns: int  # model turns
    tool_calls: int  # tool calls executed
    parallel_turns: int  # turns that asked for more than one tool call
    parallel_calls: int  # tool calls made in such turns
    max_concurrent_tools: int  # most tool calls observed running at the same moment
    duration_s: float
    error: str | None = None
    completions: list[dict] = field(default_factory=list)  # per turn: finish_reason, usage
    tests: dict[str, str] | None = None  # the verifier's per-test outcomes (swe), stored with the trajectory

    @property
    def parallel_share(self) -> float:
        """Share of the episode's tool calls issued in parallel with another."""
        return self.parallel_calls / self.tool_calls if self.tool_calls else 0.0

    def to_dict(self) -> dict:
        return {**asdict(self), "parallel_share": self.parallel_share}


class Agent:
    def __init__(
        self,
        client: ChatClient,
        sandbox: Sandbox | None = None,
        max_turns: int = 4,
        max_parallel_tools: int = 8,
        **sampling: Any,
    ):
        """sampling: extra request fields (max_tokens, temperature, top_p, seed, ...)."""
        if max_turns < 1:
            raise ValueError("max_turns must be at least 1")
        self.client, self.sandbox = client, sandbox or Sandbox()
        self.max_turns, self.max_parallel_tools, self.sampling = max_turns, max_parallel_tools, sampling
        self._pool = ThreadPoolExecutor(max_parallel_tools, thread_name_prefix="agent-tool")

    def close(self) -> None:
        self._pool.shutdown(wait=True)

    def __enter__(self) -> Agent:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def run(
        self, task: Task, client: ChatClient | None = None, max_turns: int | None = None, **sampling: Any
    ) -> Episode:
        """One episode. `client` replaces the agent's own (a per-session key), `max_turns` its turn limit, and
        `sampling` adds request fields."""
        client, sampling = client or self.client, {**self.sampling, **sampling}
        max_turns = max_turns or self.max_turns
        t0 = time.monotonic()
        if task.verifier.get("kind") == "swe_tests":
            return self._swe_episode(task, client, max_turns, sampling, t0)
        with ToolBox(self.sandbox, task.environment.get("files")) as tools:
            return self._episode(task, client, max_turns, sampling, tools, t0, task.tools, None)

    def _swe_episode(self, task: Task, client: ChatClient, max_turns: int, sampling: dict, t0: float) -> Episode:
        """A swe task: its repository copy (without the hidden tests) is the workspace, its venv on the commands'
        PATH, the SWE tool set offered unless the task names tools; graded on the final copy."""
        from ..tasks.swe import environment_for

        env = environment_for(task)
        sandbox = env.sandbox(self.sandbox.limits)
        with (
            env.open_episode(sandbox) as ep,
            ToolBox(sandbox, workspace=ep.workspace, command_env=env.command_env(ep.root)) as tools,
        ):
            return self._episode(task, client, max_turns, sampling, tools, t0, task.tools or SWE_TOOLS, ep.path)

    def _episode(
        self,
        task: Task,
        client: ChatClient,
        max_turns: int,
        sampling: dict,
        tools: ToolBox,
        t0: float,
        offered: list[dict],
        workspace: str | None,
    ) -> Episode:
        messages: list[dict] = [dict(m) for m in task.prompt]
        turns = n_calls = par_turns = par_calls = 0
        gauge = _Gauge()  # per episode: episodes may run side by side on one Agent
        stop, error, completions = "max_turns", None, []
        while turns < max_turns:
            try:
                reply = client.chat(messages, tools=offered or None, **sampling)
            except ChatError as e:
                stop, error = "error", str(e)
                break
            turns += 1
            completions.append({"finish_reason": reply.finish_reason, "usage": reply.usage})
            msg = {"role": "assistant", "content": reply.message.get("content") or ""}
            calls = reply.message.get("tool_calls") or []
            if calls:
                msg["tool_calls"] = calls
            messages.append(msg)
            if not calls:
                stop = "answer"
                break
            n_calls += len(calls)
            if len(calls) > 1:
                par_turns += 1
                par_calls += len(calls)
            outputs = list(self._pool.map(lambda c: self._call_tool(tools, c, gauge), calls))
            for i, (call, out) in enumerate(zip(calls, outputs)):
                messages.append(
                    {
                        "role": "tool",
                        "tool_call_id": call.get("id") or f"call_{turns}_{i}",
                        "name": (call.get("function") or {}).get("name", ""),
                        "content": out,
                    }
                )
            if tools.submitted:
                stop = "submit"
                break
        verdict = verify(task, messages, tools.sandbox, workspace=workspace)
        return Episode(
            task_id=task.id,
            messages=messages,
            reward=verdict.reward,
            passed=verdict.passed,
            verdict=verdict.reason,
            stop=stop,
            turns=turns,
            tool_calls=n_calls,
            parallel_turns=par_turns,
            parallel_calls=par_calls,
            max_concurrent_tools=gauge.peak,
            duration_s=time.monotonic() - t0,
            error=error,
            completions=completions,
            tests=verdict.tests,
        )

    @staticmethod
    def _call_tool(tools: ToolBox, call: dict, gauge: _Gauge) -> str:
        fn = call.get("function") or {}
        with gauge:
            return tools.call(fn.get("name", ""), fn.get("arguments", {}))


class _Gauge:
    """Counts tool calls running at once and keeps the peak (the evidence that calls ran in parallel)."""

    def __init__(self) -> None:
        self.running = self.peak = 0
        self.lock = threading.Lock()

    def __enter__(self) -> None:
        with self.lock:
            self.running += 1
            self.peak = max(self.peak, self.running)

    def __exit__(self, *exc: object) -> None:
        with self.lock:
            self.running -= 1
