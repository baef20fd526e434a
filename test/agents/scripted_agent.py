"""A scripted bring-your-own agent written with the official `openai` Python SDK (run by trainflow in the
sandbox, with OPENAI_BASE_URL / OPENAI_API_KEY pointing at its proxy session and the task workspace as its
working folder).

It talks to the model the way framework agents do: a system message as a list of text parts, a streamed first
turn with a tool offered, the assistant message rebuilt from the streamed text, a tool result, a second
(non-streamed) turn. In the swe test's repository it then fixes the bug; on demo tasks it writes
answer.txt: the right answer for the "How many ..." questions of the demo
tasks (it counts data.txt itself), the model's text for the others, and it prints that it solved the task
whatever it did: the reward must come from the workspace, never from what the agent says.
"""

import json
import os
import sys

import openai

client = openai.OpenAI(max_retries=0)
prompt = os.environ["TRAINFLOW_TASK_PROMPT"]
max_tokens = int(os.environ.get("AGENT_MAX_TOKENS", "8"))
tools = [
    {
        "type": "function",
        "function": {
            "name": "bash",
            "description": "run a command",
            "parameters": {"type": "object", "properties": {"command": {"type": "string"}}},
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

text, calls = "", {}
for chunk in client.chat.completions.create(
    model="policy", messages=messages, tools=tools, max_tokens=max_tokens, stream=True
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
for c in reply.get("tool_calls", []):
    messages.append({"role": "tool", "tool_call_id": c["id"], "content": "ok"})
if not calls:
    messages.append({"role": "user", "content": "Continue."})
second = client.chat.completions.create(model="policy", messages=messages, max_tokens=max_tokens)
said = second.choices[0].message.content or ""

if os.path.exists("calc/__init__.py"):  # the swe test's repository: fix its bug and stop (no answer.txt)
    source = open("calc/__init__.py").read()
    open("calc/__init__.py", "w").write(source.replace("return a - b", "return a + b"))
    print(json.dumps({"claim": "solved", "hidden_tests_seen": os.path.exists("tests/test_add.py")}))
    sys.exit(0)
numbers = [int(x) for x in open("data.txt").read().split()] if os.path.exists("data.txt") else []
if prompt.startswith("How many odd"):
    answer = str(sum(n % 2 for n in numbers))
elif prompt.startswith("How many"):
    answer = str(len(numbers))
else:
    answer = said
with open("answer.txt", "w") as f:
    f.write(answer + "\n")
print(json.dumps({"claim": "solved", "answer": answer}))
sys.exit(0)
