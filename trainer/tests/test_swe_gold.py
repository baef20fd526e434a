"""Gold trajectories (tasks/swe/gold.py): an instance's gold patch as the reference agent's own episode, for SFT.

Faithful: replayed through the real reference agent — its loop, its SWE tools in the real sandbox, on the
instance's environment — the trajectory's model turns (served by an OpenAI-compatible endpoint standing in for
the model, the only part that is not real) yield exactly the trajectory's tool responses, and the final
workspace grades 1.0 with the hidden tests. The repository is made to be awkward: a function body that occurs
twice (so a hunk's lines are not unique and the stretch must grow), two hunks in one file (apart), a new file and a
deleted file. The SFT side: the rendered conversation trains on the assistant's tokens only.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from test_agent import Stub
from test_swe_grading import diff

from trainflow_trainer.agent import Agent, ChatClient
from trainflow_trainer.agent.tools import SWE_TOOLS
from trainflow_trainer.contract import DataSource
from trainflow_trainer.data import load_stream
from trainflow_trainer.sandbox import Sandbox
from trainflow_trainer.sandbox import confinement as cf
from trainflow_trainer.tasks.swe import (
    SweInstance,
    build_environment,
    instance_task,
    write_instances,
)
from trainflow_trainer.tasks.swe.gold import GoldError, file_edits, gold_trajectory
from trainflow_trainer.tasks.swe.instance import EnvironmentSpec, Snapshot
from trainflow_trainer.tokenizer import IM_END, IM_START, train_tokenizer

pytestmark = pytest.mark.skipif(not cf.bwrap_works()[0], reason="needs bwrap: " + cf.bwrap_works()[1])

# `scale` and `shift` share a body line for line: the hunk that fixes one is not unique in the file.
GOOD = '''"""Small vector helpers."""


def scale(xs, k):
    out = []
    n = 0
    for x in xs:
        n += 1
        out.append(x * k)
    return out


def shift(xs, k):
    out = []
    n = 0
    for x in xs:
        n += 1
        out.append(x + k)
    return out


def clip(xs, lo, hi):
    out = []
    for x in xs:
        if x < lo:
            x = lo
        if x > hi:
            x = hi
        out.append(x)
    return out


def total(xs):
    s = 0
    for x in xs:
        s += x
    return s
'''
BUGGY = GOOD.replace("out.append(x + k)", "out.append(x * k)").replace("s += x", "s -= x")
OLD_HELPER = "def unused():\n    return None\n"
NEW_MODULE = "from vec.core import total\n\n\ndef mean(xs):\n    return total(xs) / len(xs)\n"
HIDDEN = """from vec.core import shift, total
from vec.stats import mean


def test_shift():
    assert shift([1, 2], 3) == [4, 5]


def test_total():
    assert total([1, 2, 3]) == 6


def test_mean():
    assert mean([1, 2, 3]) == 2
"""
OTHER = "from vec.core import scale\n\n\ndef test_scale():\n    assert scale([1, 2], 3) == [3, 6]\n"


def deleted(path: str, text: str) -> str:
    body = "".join("-" + ln for ln in text.splitlines(True))
    n = len(text.splitlines())
    head = f"diff --git a/{path} b/{path}\ndeleted file mode 100644\n--- a/{path}\n+++ /dev/null\n"
    return f"{head}@@ -1,{n} +0,0 @@\n{body}"


def created(path: str, text: str) -> str:
    body = "".join("+" + ln for ln in text.splitlines(True))
    n = len(text.splitlines())
    return f"diff --git a/{path} b/{path}\nnew file mode 100644\n--- /dev/null\n+++ b/{path}\n@@ -0,0 +1,{n} @@\n{body}"


@pytest.fixture(scope="module")
def instance(tmp_path_factory: pytest.TempPathFactory) -> SweInstance:
    repo = tmp_path_factory.mktemp("vec-repo")
    (repo / "vec").mkdir()
    (repo / "vec" / "__init__.py").write_text("")
    (repo / "vec" / "core.py").write_text(GOOD)
    (repo / "vec" / "stats.py").write_text(NEW_MODULE)
    (repo / "tests").mkdir()
    (repo / "tests" / "test_vec.py").write_text(HIDDEN)
    (repo / "tests" / "test_scale.py").write_text(OTHER)
    # the base tree: both bugs in core.py, stats.py missing, a stale helper module present
    setup = diff("vec/core.py", GOOD, BUGGY) + deleted("vec/stats.py", NEW_MODULE) + created("vec/old.py", OLD_HELPER)
    gold = diff("vec/core.py", BUGGY, GOOD) + created("vec/stats.py", NEW_MODULE) + deleted("vec/old.py", OLD_HELPER)
    return SweInstance(
        instance_id="vec__gold.multi",
        repo="example/vec",
        base_commit="v1",
        patch=gold,
        problem_statement="shift() multiplies instead of adding, total() subtracts, and vec.stats.mean is missing.",
        FAIL_TO_PASS=["tests/test_vec.py::test_shift", "tests/test_vec.py::test_total", "tests/test_vec.py::test_mean"],
        PASS_TO_PASS=["tests/test_scale.py::test_scale"],
        snapshot=Snapshot(kind="dir", path=str(repo), setup_patch=setup),
        environment=EnvironmentSpec(requirements=["pytest==8.3.4"]),
    )


def replay(conv: dict[str, Any]) -> tuple[Stub, list[dict[str, Any]]]:
    """An endpoint answering the agent's n-th request with the trajectory's n-th assistant turn (arguments as
    the JSON string an OpenAI server sends)."""
    turns = [m for m in conv["messages"] if m["role"] == "assistant"]

    def script(messages: list[dict[str, Any]]) -> dict[str, Any]:
        turn = turns[sum(m["role"] == "assistant" for m in messages)]
        calls = []
        for c in turn["tool_calls"]:
            args = json.dumps(c["function"]["arguments"], ensure_ascii=False)
            calls.append({**c, "function": {**c["function"], "arguments": args}})
        return {"content": turn["content"], "tool_calls": calls}

    return Stub(script), turns


def test_a_gold_trajectory_replayed_by_the_reference_agent_grades_1_with_the_same_tool_responses(instance):
    build_environment(instance)
    conv = gold_trajectory(instance)
    assert conv["tools"] == SWE_TOOLS and conv["messages"][:2] == instance_task(instance).prompt
    calls = [m["tool_calls"][0]["function"] for m in conv["messages"] if m["role"] == "assistant"]
    assert [(c["name"], c["arguments"].get("command")) for c in calls] == [
        ("str_replace_editor", "str_replace"),  # shift's body: grown past the lines it shares with scale
        ("str_replace_editor", "str_replace"),  # total
        ("str_replace_editor", "create"),  # vec/stats.py
        ("bash", "rm 'vec/old.py'"),
        ("submit", None),
    ]
    first = calls[0]["arguments"]
    # the hunk (3 lines of context each side of the bug) is scale's body too: the stretch grew to be unique
    hunk = "    n = 0\n    for x in xs:\n        n += 1\n        out.append(x * k)\n    return out\n\n\n"
    assert BUGGY.count(hunk) == 2 and hunk in first["old_str"] and len(first["old_str"]) > len(hunk)
    assert BUGGY.count(first["old_str"]) == 1
    stub, turns = replay(conv)
    try:
        with Agent(ChatClient(stub.url), Sandbox(), max_turns=len(turns) + 1) as agent:
            ep = agent.run(instance_task(instance))
    finally:
        stub.close()
    assert (ep.stop, ep.reward, ep.passed) == ("submit", 1.0, True), ep.verdict
    assert ep.tests is not None and set(ep.tests.values()) == {"passed"} and len(ep.tests) == 4
    # what the agent recorded is the trajectory, tool responses and ids included
    got = [{k: m[k] for k in ("role", "content", "tool_call_id", "name") if k in m} for m in ep.messages]
    want = [{k: m[k] for k in ("role", "content", "tool_call_id", "name") if k in m} for m in conv["messages"]]
    assert got == want
    # and the agent offered the model the trajectory's tool set, on the trajectory's prompt
    assert stub.requests[0]["body"]["tools"] == conv["tools"]
    assert stub.requests[0]["body"]["messages"] == conv["messages"][:2]


def test_edits_reproduce_the_file_and_patches_the_tools_cannot_make_are_refused(instance, tmp_path):
    before, after = BUGGY, GOOD
    cur = before
    for _, args, _ in file_edits("vec/core.py", before, after):
        assert cur.count(args["old_str"]) == 1  # the editor's own rule
        cur = cur.replace(args["old_str"], args["new_str"])
    assert cur == after
    binary = instance.model_copy(update={"patch": instance.patch + "diff --git a/x.bin b/x.bin\nGIT binary patch\n"})
    with pytest.raises(GoldError, match="binary"):
        gold_trajectory(binary)
    with pytest.raises(GoldError, match="no gold patch"):
        gold_trajectory(instance.model_copy(update={"patch": ""}))


def test_the_sft_rows_of_a_gold_source_train_on_the_assistants_tokens_only(instance, tmp_path: Path):
    path = tmp_path / "instances.jsonl"
    write_instances(path, [instance])
    conv = gold_trajectory(instance)
    tok = train_tokenizer([json.dumps(conv), GOOD, HIDDEN], vocab_size=600)
    src = DataSource.model_validate({"path": str(path), "kind": "gold_trajectories", "weight": 1.0, "format": "jsonl"})
    ex = load_stream([src], storage=None, tok=tok, kind="sft", seed=0).next()  # type: ignore[arg-type]
    rendered = tok.render_chat(conv["messages"], tools=conv["tools"])
    assert ex.ids == rendered.ids and ex.targets == rendered.assistant_mask
    text = tok.decode(ex.ids)
    # the targets, decoded run by run, are the assistant turns (tool calls and their <|im_end|>) and nothing else
    runs, run = [], []
    for i, t in zip(ex.ids, ex.targets):
        if t:
            run.append(i)
        elif run:
            runs.append(tok.decode(run))
            run = []
    assistant_turns = [m for m in conv["messages"] if m["role"] == "assistant"]
    assert len(runs) == len(assistant_turns)
    for r, m in zip(runs, assistant_turns):
        call = m["tool_calls"][0]["function"]
        assert r.startswith("<tool_call>\n") and r.endswith(IM_END) and json.dumps(call["name"]) in r
        assert f"{IM_START}user" not in r and "<tool_response>" not in r
    untrained = tok.decode([i for i, t in zip(ex.ids, ex.targets) if not t])
    assert instance.problem_statement in untrained and "edited vec/core.py" in untrained
    assert text.count(f"{IM_START}assistant\n") == len(assistant_turns)
