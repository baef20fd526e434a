"""`python -m trainflow_trainer.agent --base-url URL --tasks demo|humaneval|FILE.jsonl [options]`

Runs the reference agent on tasks against an OpenAI-compatible endpoint and prints one JSON line per
episode (`TRAINFLOW_EPISODE {...}`: task, reward, turns, tool calls, parallel calls, stop reason; the whole
conversation with --messages) and a last summary line (`TRAINFLOW_AGENT_SUMMARY {...}`). The API key comes
from --api-key or the environment variable TRAINFLOW_AGENT_API_KEY.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from concurrent.futures import ThreadPoolExecutor

from ..sandbox import Limits, Sandbox
from ..tasks import TaskFormatError, load_tasks
from .client import ChatClient
from .loop import Agent


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m trainflow_trainer.agent", description=__doc__.split("\n\n")[1])
    ap.add_argument("--base-url", required=True, help="OpenAI-compatible API root, e.g. http://127.0.0.1:8000/v1")
    ap.add_argument("--api-key", default=os.environ.get("TRAINFLOW_AGENT_API_KEY"))
    ap.add_argument("--model", default="default")
    ap.add_argument("--tasks", required=True, help="demo | humaneval | a tasks JSONL file")
    ap.add_argument("--count", type=int, default=None)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--max-turns", type=int, default=4)
    ap.add_argument("--max-tokens", type=int, default=256)
    ap.add_argument("--temperature", type=float, default=1.0)
    ap.add_argument("--concurrency", type=int, default=1, help="episodes at once")
    ap.add_argument("--timeout", type=float, default=10.0, help="seconds per sandboxed run")
    ap.add_argument("--messages", action="store_true", help="include each episode's conversation")
    args = ap.parse_args(argv)

    spec = {"family": args.tasks, "seed": args.seed} if args.tasks in ("demo", "humaneval") else \
        {"family": "jsonl", "path": args.tasks, "seed": args.seed}
    if args.count is not None:
        spec["count"] = args.count
    try:
        tasks = load_tasks(spec)
    except (TaskFormatError, OSError) as e:
        print(f"trainflow: bad input: {e}", file=sys.stderr)
        return 2
    client = ChatClient(args.base_url, args.api_key, model=args.model)
    sampling = {"max_tokens": args.max_tokens, "temperature": args.temperature}
    with Agent(client, Sandbox(Limits(timeout_s=args.timeout)), max_turns=args.max_turns, **sampling) as agent, \
            ThreadPoolExecutor(max(1, args.concurrency)) as pool:
        episodes = []
        for ep in pool.map(agent.run, tasks):
            d = ep.to_dict()
            if not args.messages:
                d.pop("messages")
            print("TRAINFLOW_EPISODE " + json.dumps(d), flush=True)
            episodes.append(ep)
    n = len(episodes)
    calls = sum(e.tool_calls for e in episodes)
    summary = {"episodes": n, "mean_reward": sum(e.reward for e in episodes) / max(n, 1),
               "mean_turns": sum(e.turns for e in episodes) / max(n, 1),
               "parallel_call_share": sum(e.parallel_calls for e in episodes) / calls if calls else 0.0,
               "errors": sum(e.stop == "error" for e in episodes)}
    print("TRAINFLOW_AGENT_SUMMARY " + json.dumps(summary), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
