"""`python -m trainflow_trainer.agent --base-url URL --tasks demo|humaneval|FILE.jsonl [options]`
`python -m trainflow_trainer.agent --worker [--concurrency N] [options]`

Runs the reference agent on tasks against an OpenAI-compatible endpoint and prints one JSON line per
episode (`TRAINFLOW_EPISODE {...}`: task, reward, turns, tool calls, parallel calls, stop reason; the whole
conversation with --messages) and a last summary line (`TRAINFLOW_AGENT_SUMMARY {...}`). The API key comes
from --api-key or the environment variable TRAINFLOW_AGENT_API_KEY.

--worker: a long-lived agent worker for the rollout manager. Each stdin line is one request
    {"id": "r1", "base_url": "http://proxy/v1", "api_key": "session key", "task": {task object},
     "max_turns": 3?, "sampling": {"max_tokens": 48, "temperature": 1.0, "top_p": 1.0}?}
and gets one stdout line `TRAINFLOW_EPISODE {"id": "r1", ...episode...}` when its episode ends (in any order;
up to --concurrency at once), or `TRAINFLOW_EPISODE {"id": "r1", "error": "..."}` for a bad request. The
worker exits 0 after stdin closes and every episode has been answered.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
from concurrent.futures import ThreadPoolExecutor

from ..contract import EPISODE_LINE_PREFIX, Episode, TasksConfig
from ..sandbox import Limits, Sandbox
from ..tasks import Task, TaskFormatError, load_tasks
from .byo import ByoAgent, run_episode
from .client import ChatClient
from .loop import Agent


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m trainflow_trainer.agent", description=__doc__.split("\n\n")[1])
    ap.add_argument("--base-url", help="OpenAI-compatible API root, e.g. http://127.0.0.1:8000/v1")
    ap.add_argument("--api-key", default=os.environ.get("TRAINFLOW_AGENT_API_KEY"))
    ap.add_argument("--model", default="default")
    ap.add_argument("--tasks", help="demo | humaneval | a tasks JSONL file")
    ap.add_argument("--worker", action="store_true", help="serve episode requests from stdin (JSON lines)")
    ap.add_argument("--count", type=int, default=None)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--max-turns", type=int, default=4)
    ap.add_argument("--max-tokens", type=int, default=256)
    ap.add_argument("--temperature", type=float, default=1.0)
    ap.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling threshold (rollout.top_p)")
    ap.add_argument("--concurrency", type=int, default=1, help="episodes at once")
    ap.add_argument("--timeout", type=float, default=10.0, help="seconds per sandboxed run")
    ap.add_argument("--messages", action="store_true", help="include each episode's conversation")
    ap.add_argument(
        "--byo",
        default=None,
        help="worker: run this program per episode instead of the reference agent, as JSON "
        '{"command": [...], "env": {...}, "timeout_s": S} (rollout.agent; see agent/byo.py)',
    )
    args = ap.parse_args(argv)
    sampling = {"max_tokens": args.max_tokens, "temperature": args.temperature, "top_p": args.top_p}
    if args.worker:
        return worker(args, sampling)
    if not args.base_url or not args.tasks:
        ap.error("--base-url and --tasks are required (or --worker)")

    spec = (
        {"family": args.tasks, "seed": args.seed}
        if args.tasks in ("demo", "humaneval")
        else {"family": "jsonl", "path": args.tasks, "seed": args.seed}
    )
    if args.count is not None:
        spec["count"] = args.count
    try:
        tasks = load_tasks(TasksConfig.model_validate(spec))
    except (TaskFormatError, OSError) as e:
        print(f"trainflow: bad input: {e}", file=sys.stderr)
        return 2
    client = ChatClient(args.base_url, args.api_key, model=args.model)
    with (
        Agent(client, Sandbox(Limits(timeout_s=args.timeout)), max_turns=args.max_turns, **sampling) as agent,
        ThreadPoolExecutor(max(1, args.concurrency)) as pool,
    ):
        episodes = []
        for ep in pool.map(agent.run, tasks):
            d = ep.to_dict()
            if not args.messages:
                d.pop("messages")
            print(EPISODE_LINE_PREFIX + json.dumps(d), flush=True)
            episodes.append(ep)
    n = len(episodes)
    calls = sum(e.tool_calls for e in episodes)
    summary = {
        "episodes": n,
        "mean_reward": sum(e.reward for e in episodes) / max(n, 1),
        "mean_turns": sum(e.turns for e in episodes) / max(n, 1),
        "parallel_call_share": sum(e.parallel_calls for e in episodes) / calls if calls else 0.0,
        "errors": sum(e.stop == "error" for e in episodes),
    }
    print("TRAINFLOW_AGENT_SUMMARY " + json.dumps(summary), flush=True)
    return 0


def worker(args: argparse.Namespace, sampling: dict) -> int:
    out_lock = threading.Lock()
    byo = ByoAgent.from_dict(json.loads(args.byo)) if args.byo else None

    def emit(obj: dict) -> None:
        with out_lock:
            # the contract's Episode (src/contract/driver.ts): what the RL driver parses
            line = Episode.model_validate(obj).model_dump_json(exclude_unset=True)
            sys.stdout.write(EPISODE_LINE_PREFIX + line + "\n")
            sys.stdout.flush()

    def serve(agent: Agent, line: str) -> None:
        rid = None
        try:
            req = json.loads(line)
            rid = req.get("id")
            task = Task.from_dict(req.get("task"), where=f"request {rid}")
            if not isinstance(req.get("base_url"), str):
                raise TaskFormatError(f"request {rid}: field 'base_url' must be the endpoint's URL")
            if byo is not None:
                emit({"id": rid, **run_episode(task, req["base_url"], req.get("api_key"), byo, agent.sandbox)})
                return
            client = ChatClient(req["base_url"], req.get("api_key"), model=req.get("model", args.model))
            turns = int(req.get("max_turns", args.max_turns))
            ep = agent.run(task, client, max_turns=turns, **{**sampling, **(req.get("sampling") or {})})
            d = ep.to_dict()
            if not args.messages:
                d.pop("messages")
            emit({"id": rid, **d})
        except Exception as e:  # a bad request is answered, never fatal to the worker
            emit({"id": rid, "error": f"{type(e).__name__}: {e}"})

    with (
        Agent(
            ChatClient("http://unused.invalid"), Sandbox(Limits(timeout_s=args.timeout)), max_turns=args.max_turns
        ) as agent,
        ThreadPoolExecutor(max(1, args.concurrency)) as pool,
    ):
        for line in sys.stdin:
            if line.strip():
                pool.submit(serve, agent, line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
