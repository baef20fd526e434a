"""A scripted bring-your-own agent written with the official `openai` Python SDK (run by trainflow in the
sandbox, with OPENAI_BASE_URL / OPENAI_API_KEY pointing at its proxy session and the task workspace as its
working folder).

It talks to the model the way framework agents do: a system message as a list of text parts, the same bash
tool offered at every turn, a streamed first turn whose assistant message it rebuilds from the streamed deltas,
then non-streamed turns whose replies it sends back as the SDK's own message objects
(`response.choices[0].message`). It runs the bash calls the model makes in the workspace and answers each with
its output; a reply without a call gets "Continue.". AGENT_TURNS model calls in all (default 2), at
AGENT_TEMPERATURE (default: the server's).

Unless AGENT_OWN_FIX=0 it then does the task itself, whatever the model did: in the swe test's repository it
fixes the bug; on demo tasks it writes answer.txt (the right answer for the "How many ..." questions, which it
counts in data.txt itself, the model's text for the others). It prints that it solved the task whatever it
did: the reward must come from the workspace, never from what the agent says.
"""

import json
import os
import subprocess
import sys

import openai

client = openai.OpenAI(max_retries=0)
prompt = os.environ["TRAINFLOW_TASK_PROMPT"]
max_tokens = int(os.environ.get("AGENT_MAX_TOKENS", "8"))
turns = int(os.environ.get("AGENT_TURNS", "2"))
# the sampling temperature, when AGENT_TEMPERATURE is set (else the server's default)
sampling = {"temperature": float(os.environ["AGENT_TEMPERATURE"])} if "AGENT_TEMPERATURE" in os.environ else {}
tools = [
    {
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
]
messages: list = [
    {
        "role": "system",
        "content": [{"type": "text", "text": "You are a coding agent."}, {"type": "text", "text": "Be brief."}],
    },
    {"role": "user", "content": prompt},
]


def run_bash(arguments: str) -> str:
    try:
        command = json.loads(arguments)["command"]
    except (ValueError, TypeError, KeyError):
        return "error: the arguments must be a JSON object with a 'command' string"
    try:
        r = subprocess.run(command, shell=True, capture_output=True, text=True, timeout=20)
    except subprocess.TimeoutExpired:
        return "error: timed out"
    return (r.stdout + r.stderr)[-2000:]


def answer(calls: list) -> None:
    """The tool messages for the reply's calls (its bash commands run), or a nudge when it made none."""
    for c in calls:
        messages.append({"role": "tool", "tool_call_id": c["id"], "content": run_bash(c["function"]["arguments"])})
    if not calls:
        messages.append({"role": "user", "content": "Continue."})


# turn 1, streamed: the assistant message is rebuilt from the deltas
text, calls = "", {}
for chunk in client.chat.completions.create(
    model="policy", messages=messages, tools=tools, max_tokens=max_tokens, stream=True, **sampling
):
    for ch in chunk.choices:
        text += ch.delta.content or ""
        for tc in ch.delta.tool_calls or []:
            c = calls.setdefault(tc.index, {"id": tc.id, "type": "function", "function": {"name": "", "arguments": ""}})
            c["function"]["name"] += tc.function.name or ""
            c["function"]["arguments"] += tc.function.arguments or ""
reply: dict = {"role": "assistant", "content": text}
if calls:
    reply["tool_calls"] = [calls[k] for k in sorted(calls)]
messages.append(reply)
answer(reply.get("tool_calls", []))

# the other turns: the SDK's message object goes back as it came
said = text
for _ in range(turns - 1):
    message = (
        client.chat.completions.create(
            model="policy", messages=messages, tools=tools, max_tokens=max_tokens, **sampling
        )
        .choices[0]
        .message
    )
    messages.append(message)
    said = message.content or ""
    answer([c.model_dump() for c in message.tool_calls or []])

if os.environ.get("AGENT_OWN_FIX", "1") == "0":
    print(json.dumps({"claim": "solved"}))
    sys.exit(0)
if os.path.exists("calc/__init__.py"):  # the swe test's repository: fix its bug and stop (no answer.txt)
    source = open("calc/__init__.py").read()
    open("calc/__init__.py", "w").write(source.replace("return a - b", "return a + b"))
    print(json.dumps({"claim": "solved", "hidden_tests_seen": os.path.exists("tests/test_add.py")}))
    sys.exit(0)
numbers = [int(x) for x in open("data.txt").read().split()] if os.path.exists("data.txt") else []
if prompt.startswith("How many odd"):
    result = str(sum(n % 2 for n in numbers))
elif prompt.startswith("How many"):
    result = str(len(numbers))
else:
    result = said
with open("answer.txt", "w") as f:
    f.write(result + "\n")
print(json.dumps({"claim": "solved", "answer": result}))
sys.exit(0)
