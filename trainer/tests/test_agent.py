"""The reference agent against a scripted OpenAI-compatible server (a real HTTP server in this process that
answers with scripted tool calls), and once against the real CPU inference server (`trainflow_trainer.serve`).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from trainflow_trainer.agent import Agent, ChatClient
from trainflow_trainer.sandbox import Limits, Sandbox
from trainflow_trainer.tasks import demo_tasks, humaneval_tasks

TRAINER = Path(__file__).resolve().parents[1]


class Stub:
    """An OpenAI-compatible endpoint whose replies come from `script(messages) -> assistant message`."""

    def __init__(self, script):
        self.script = script
        self.requests: list[dict[str, Any]] = []
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                stub.requests.append({"path": self.path, "auth": self.headers.get("Authorization"), "body": body})
                msg = stub.script(body["messages"])
                if msg is None:
                    self.send_response(500)
                    self.end_headers()
                    self.wfile.write(b'{"error": {"message": "scripted failure"}}')
                    return
                reason = "tool_calls" if msg.get("tool_calls") else "stop"
                data = json.dumps(
                    {
                        "id": "x",
                        "object": "chat.completion",
                        "model": body["model"],
                        "choices": [{"index": 0, "message": {"role": "assistant", **msg}, "finish_reason": reason}],
                        "usage": {"prompt_tokens": 1, "completion_tokens": 1},
                    }
                ).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def call(code: str, i: int = 0) -> dict:
    return {
        "id": f"call_{i}",
        "type": "function",
        "function": {"name": "python", "arguments": json.dumps({"code": code})},
    }


def python_for(question: str) -> str:
    """The program that answers a demo question (it reads the task's data.txt)."""
    from trainflow_trainer.demo_data import QUESTIONS

    return {q: code for level in QUESTIONS for q, code, _ in level}[question]


def said(task, **changes):
    """The task with its answer read from the final message (verifier source final) instead of the tool."""
    import dataclasses

    return dataclasses.replace(task, verifier={**task.verifier, "source": "final"}, **changes)


@pytest.fixture
def stub():
    stubs = []

    def make(script):
        s = Stub(script)
        stubs.append(s)
        return s

    yield make
    for s in stubs:
        s.close()


@pytest.fixture(scope="module")
def sandbox():
    return Sandbox(Limits(timeout_s=10))


def test_tool_call_then_answer(stub, sandbox):
    task = demo_tasks(3, seed=0)[2]

    def script(messages):
        if messages[-1]["role"] == "user":
            return {"content": "", "tool_calls": [call(python_for(messages[-1]["content"]))]}
        return {"content": f"The answer is {messages[-1]['content']}."}

    s = stub(script)
    with Agent(ChatClient(s.url, api_key="sess-1"), sandbox, max_turns=4, max_tokens=64) as agent:
        ep = agent.run(task)
    assert (ep.reward, ep.stop, ep.turns, ep.tool_calls, ep.parallel_turns) == (1.0, "answer", 2, 1, 0)
    tool_msg = ep.messages[-2]
    assert tool_msg["role"] == "tool" and tool_msg["tool_call_id"] == "call_0"
    assert tool_msg["content"] == task.verifier["expected"]  # really computed in the sandbox
    assert [r["auth"] for r in s.requests] == ["Bearer sess-1"] * 2
    first = s.requests[0]["body"]
    assert first["tools"] == task.tools and first["max_tokens"] == 64 and first["messages"] == task.prompt
    assert s.requests[1]["body"]["messages"][-2]["tool_calls"][0]["function"]["name"] == "python"


def test_several_tool_calls_in_one_turn_run_in_parallel(stub, sandbox):
    task = said(demo_tasks(1)[0])
    # 3 s each: the three still overlap when a loaded machine staggers their starts
    code = "import time\nt0 = time.time()\ntime.sleep(3)\nprint({i}, t0, time.time())"

    def script(messages):
        if messages[-1]["role"] == "user":
            return {"content": "Let me run three things.", "tool_calls": [call(code.format(i=i), i) for i in range(3)]}
        return {"content": "ANSWER: " + task.verifier["expected"]}

    s = stub(script)
    with Agent(ChatClient(s.url), sandbox, max_parallel_tools=4) as agent:
        ep = agent.run(task)
    assert (ep.reward, ep.turns, ep.tool_calls, ep.parallel_turns, ep.parallel_calls) == (1.0, 2, 3, 1, 3)
    assert ep.max_concurrent_tools == 3 and ep.parallel_share == 1.0
    tool_msgs = [m for m in ep.messages if m["role"] == "tool"]
    assert [m["tool_call_id"] for m in tool_msgs] == ["call_0", "call_1", "call_2"]  # in the order of the calls
    spans = [tuple(map(float, m["content"].split()[1:])) for m in tool_msgs]
    assert [m["content"].split()[0] for m in tool_msgs] == ["0", "1", "2"]
    assert max(start for start, _ in spans) < min(end for _, end in spans)  # all three were running at once


def test_stops_at_max_turns_and_reports_tool_errors_to_the_model(stub, sandbox):
    task = demo_tasks(1)[0]
    replies = iter(
        [
            {
                "content": "",
                "tool_calls": [{"id": "a", "type": "function", "function": {"name": "shell", "arguments": "{}"}}],
            },
            {
                "content": "",
                "tool_calls": [
                    {"id": "b", "type": "function", "function": {"name": "python", "arguments": "{not json"}}
                ],
            },
            {"content": "", "tool_calls": [call("while True: pass")]},
            {"content": "never reached"},
        ]
    )
    s = stub(lambda messages: next(replies))
    with Agent(ChatClient(s.url), Sandbox(Limits(timeout_s=1)), max_turns=3) as agent:
        ep = agent.run(task)
    assert (ep.stop, ep.turns, ep.tool_calls, ep.reward) == ("max_turns", 3, 3, 0.0)
    tools = [m["content"] for m in ep.messages if m["role"] == "tool"]
    assert "unknown tool 'shell'" in tools[0] and "bad arguments" in tools[1] and "[timed out" in tools[2]


def test_an_endpoint_error_ends_the_episode_with_the_reason(stub, sandbox):
    s = stub(lambda messages: None)
    with Agent(ChatClient(s.url), sandbox) as agent:
        ep = agent.run(demo_tasks(1)[0])
    assert ep.stop == "error" and ep.error is not None and "HTTP 500" in ep.error and ep.reward == 0.0 and ep.turns == 0
    with Agent(ChatClient("http://127.0.0.1:9/v1", timeout_s=5), sandbox) as agent:
        ep = agent.run(demo_tasks(1)[0])
    assert ep.stop == "error" and ep.error is not None and "unreachable" in ep.error


def test_humaneval_answer_verified_by_its_unit_tests(stub, sandbox):
    task = humaneval_tasks(3)[2]
    good = "```python\n" + task.verifier["prefix"] + task.meta["canonical_solution"] + "```"
    s = stub(lambda messages: {"content": "Here you are:\n" + good})
    with Agent(ChatClient(s.url), sandbox) as agent:
        ep = agent.run(task)
    assert ep.passed and ep.turns == 1 and ep.stop == "answer"


def test_command_line_prints_episodes_and_a_summary(stub):
    def script(messages):
        if messages[-1]["role"] == "user":
            return {"content": "", "tool_calls": [call(python_for(messages[-1]["content"]))]}
        return {"content": f"The answer is {messages[-1]['content']}."}

    s = stub(script)
    p = subprocess.run(
        [
            sys.executable,
            "-m",
            "trainflow_trainer.agent",
            "--base-url",
            s.url,
            "--tasks",
            "demo",
            "--count",
            "4",
            "--concurrency",
            "2",
        ],
        cwd=TRAINER,
        capture_output=True,
        text=True,
        timeout=120,
        env={"PATH": "/usr/bin:/bin", "TRAINFLOW_AGENT_API_KEY": "k"},
    )
    assert p.returncode == 0, p.stderr
    episodes = [
        json.loads(line.split(" ", 1)[1]) for line in p.stdout.splitlines() if line.startswith("TRAINFLOW_EPISODE ")
    ]
    summary_line = re.search(r"TRAINFLOW_AGENT_SUMMARY (.*)", p.stdout)
    assert summary_line, p.stdout
    summary = json.loads(summary_line.group(1))
    assert len(episodes) == 4 and all(e["reward"] == 1.0 and "messages" not in e for e in episodes)
    assert summary == {"episodes": 4, "mean_reward": 1.0, "mean_turns": 2.0, "parallel_call_share": 0.0, "errors": 0}
    assert {r["auth"] for r in s.requests} == {"Bearer k"}
    bad = subprocess.run(
        [sys.executable, "-m", "trainflow_trainer.agent", "--base-url", s.url, "--tasks", "nope.jsonl"],
        cwd=TRAINER,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert bad.returncode == 2 and bad.stderr.startswith("trainflow: bad input: tasks.path: no such file")


def test_against_the_real_inference_server(tmp_path):
    """The CPU inference server (random micro model): the agent's requests are accepted and episodes end."""
    from trainflow_trainer.serve.fixture import build

    fix = build(tmp_path)
    proc = subprocess.Popen(
        [sys.executable, "-m", "trainflow_trainer.serve", "--checkpoint", fix["checkpoints"][0], "--port", "0"],
        cwd=TRAINER,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith("TRAINFLOW_SERVE "), line
        port = json.loads(line.split(" ", 1)[1])["port"]
        with Agent(
            ChatClient(f"http://127.0.0.1:{port}"), Sandbox(), max_turns=2, max_tokens=12, temperature=1.0, seed=1
        ) as agent:
            episodes = [agent.run(demo_tasks(1)[0])]
    finally:
        proc.terminate()
        proc.wait(10)
    for ep in episodes:
        assert ep.stop in ("answer", "max_turns") and ep.error is None, ep.error
        assert 1 <= ep.turns <= 2 and ep.reward == 0.0  # random weights never answer correctly
        assert all(c["usage"].get("completion_tokens", 0) >= 1 for c in ep.completions)


def test_task_environment_files_are_in_the_tool_sandbox(stub, sandbox):
    from trainflow_trainer.tasks import Task

    task = Task(
        id="env/1",
        family="jsonl",
        prompt=[{"role": "user", "content": "What is in data.txt?"}],
        tools=demo_tasks(1)[0].tools,
        environment={"files": {"data.txt": "1234\n"}},
        verifier={"kind": "answer", "expected": "1234"},
    )

    def script(messages):
        if messages[-1]["role"] == "user":
            return {"content": "", "tool_calls": [call("print(open('data.txt').read().strip())")]}
        return {"content": f"The answer is {messages[-1]['content']}."}

    s = stub(script)
    with Agent(ChatClient(s.url), sandbox) as agent:
        assert agent.run(task).passed


def test_worker_mode_answers_episode_requests_from_stdin(stub):
    def script(messages):
        if messages[-1]["role"] == "user":
            return {"content": "", "tool_calls": [call(python_for(messages[-1]["content"]))]}
        return {"content": f"The answer is {messages[-1]['content']}."}

    s = stub(script)
    tasks = demo_tasks(3, seed=2)
    tasks[2] = said(tasks[2])  # stopped after its tool call: no final answer, no reward
    requests = [
        {
            "id": f"r{i}",
            "base_url": s.url,
            "api_key": f"key-{i}",
            "task": t.to_dict(),
            "max_turns": 1 if i == 2 else 3,
            "sampling": {"max_tokens": 7},
        }
        for i, t in enumerate(tasks)
    ]
    stdin = "\n".join(json.dumps(r) for r in requests) + "\nnot json\n" + json.dumps({"id": "bad", "task": {}}) + "\n"
    p = subprocess.run(
        [sys.executable, "-m", "trainflow_trainer.agent", "--worker", "--concurrency", "3"],
        cwd=TRAINER,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert p.returncode == 0, p.stderr
    answers = [json.loads(line.split(" ", 1)[1]) for line in p.stdout.splitlines()]
    by_id = {a["id"]: a for a in answers}
    assert len(answers) == 5 and set(by_id) == {"r0", "r1", "r2", "bad", None}
    assert by_id["r0"]["reward"] == 1.0 and by_id["r1"]["reward"] == 1.0 and by_id["r0"]["turns"] == 2
    assert by_id["r2"]["stop"] == "max_turns" and by_id["r2"]["turns"] == 1 and by_id["r2"]["reward"] == 0.0
    assert "JSONDecodeError" in by_id[None]["error"] and "missing field 'id'" in by_id["bad"]["error"]
    assert {r["auth"] for r in s.requests} == {"Bearer key-0", "Bearer key-1", "Bearer key-2"}
    assert {r["body"]["max_tokens"] for r in s.requests} == {7}


def test_tool_calls_of_an_episode_share_one_work_folder(stub, sandbox):
    task = said(demo_tasks(1)[0], environment={})
    replies = iter(
        [
            {
                "content": "",
                "tool_calls": [
                    call("open('notes.txt', 'w').write('42')", 0),
                    call("open('other.txt', 'w').write('x')", 1),
                ],
            },
            {
                "content": "",
                "tool_calls": [
                    call(
                        "import os\n"
                        "print(open('notes.txt').read(), sorted(f for f in os.listdir('.') if not f.startswith('.')))",
                        2,
                    )
                ],
            },
            {"content": "done"},
        ]
    )
    s = stub(lambda messages: next(replies))
    with Agent(ChatClient(s.url), sandbox) as agent:
        ep = agent.run(task)
    assert ep.messages[-2]["content"] == "42 ['notes.txt', 'other.txt']"
    with Agent(ChatClient(s.url), sandbox) as agent:  # the next episode starts from an empty folder
        replies = iter(
            [
                {"content": "", "tool_calls": [call("import os\nprint(os.path.exists('notes.txt'))")]},
                {"content": "done"},
            ]
        )
        assert agent.run(task).messages[-2]["content"] == "False"


def tool(name: str, i: int, **args: object) -> dict:
    return {"id": f"call_{i}", "type": "function", "function": {"name": name, "arguments": json.dumps(args)}}


def test_swe_tool_set_bash_editor_and_submit_act_on_one_workspace(stub, sandbox):
    """bash, str_replace_editor (view, create, str_replace, insert) and submit, with parallel calls, on a task
    whose repository is its environment; submit ends the episode; a bad edit is reported to the model."""
    import dataclasses

    from trainflow_trainer.agent import SWE_TOOLS

    task = dataclasses.replace(
        said(demo_tasks(1)[0]),
        tools=SWE_TOOLS,
        environment={"files": {"pkg/calc.py": "def add(a, b):\n    return a - b\n"}},
    )
    turns = [
        [  # two calls at once: look around and read the file
            tool("bash", 0, command="ls pkg && echo $((6 * 7))"),
            tool("str_replace_editor", 1, command="view", path="pkg/calc.py"),
        ],
        [
            tool("str_replace_editor", 2, command="str_replace", path="pkg/calc.py", old_str="a - b", new_str="a + b"),
            tool("str_replace_editor", 3, command="str_replace", path="pkg/calc.py", old_str="nowhere", new_str="x"),
        ],
        [tool("str_replace_editor", 4, command="insert", path="pkg/calc.py", insert_line=0, new_str="# fixed")],
        [
            tool(
                "str_replace_editor",
                5,
                command="create",
                path="check.py",
                file_text="from pkg.calc import add\nprint(add(2, 3))\n",
            )
        ],
        [
            tool("bash", 6, command="python3 check.py && head -1 pkg/calc.py"),
            tool("str_replace_editor", 7, command="view", path="../../etc/passwd"),
        ],
        [tool("submit", 8)],
        [tool("bash", 9, command="echo never")],
    ]

    def script(messages):
        k = sum(m["role"] == "assistant" for m in messages)
        return {"content": "", "tool_calls": turns[k]}

    s = stub(script)
    with Agent(ChatClient(s.url), sandbox, max_turns=10) as agent:
        ep = agent.run(task)
    out = {m["tool_call_id"]: m["content"] for m in ep.messages if m["role"] == "tool"}
    assert (ep.stop, ep.turns, ep.tool_calls, ep.parallel_turns) == ("submit", 6, 9, 3)
    assert out["call_0"] == "calc.py\n42"
    assert out["call_1"] == "     1\tdef add(a, b):\n     2\t    return a - b\n     3\t"
    assert out["call_2"] == "edited pkg/calc.py"
    assert out["call_3"].startswith("error: old_str occurs 0 times in pkg/calc.py")
    assert out["call_5"] == "wrote check.py"
    assert out["call_6"] == "5\n# fixed"  # the edits landed, and bash sees the editor's files
    assert "outside the repository" in out["call_7"]
    assert out["call_8"] == "submitted" and "call_9" not in out  # nothing runs after submit
