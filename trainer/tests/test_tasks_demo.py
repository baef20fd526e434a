"""The demo task family and the task format: deterministic, a spread of difficulties, the SFT data's phrasing."""

from __future__ import annotations

import json
from collections import Counter

import pytest
from specs import rollout_stage, stage_configs, tasks_config

from trainflow_trainer.demo_data import PYTHON_TOOL, _conversation
from trainflow_trainer.sandbox import Sandbox
from trainflow_trainer.tasks import (
    Task,
    TaskFormatError,
    demo_tasks,
    load_tasks,
    read_tasks_jsonl,
    verify,
    write_tasks_jsonl,
)
from trainflow_trainer.tasks.verify import final_answer


def test_deterministic_in_the_seed_and_spread_over_difficulties():
    a, b, c = demo_tasks(50, seed=0), demo_tasks(50, seed=0), demo_tasks(50, seed=1)
    assert [t.to_json() for t in a] == [t.to_json() for t in b]
    assert [t.prompt for t in a] != [t.prompt for t in c]
    assert len({t.id for t in a}) == 50
    assert Counter(t.meta["difficulty"] for t in a) == {lvl: 10 for lvl in range(5)}
    assert demo_tasks(60, seed=0)[:50] == a  # more tasks extend the set without changing it
    assert load_tasks(tasks_config({"family": "demo", "count": 7, "seed": 3})) == demo_tasks(7, seed=3)


def test_the_python_tool_computes_every_answer():
    """The tool route works: the program SFT teaches for the question, run in the sandbox on the task's
    data file, prints the answer; the hard level-4 question needs a program SFT never shows."""
    from trainflow_trainer.demo_data import QUESTIONS, UNSEEN, _conversation

    programs = {q: code for level in QUESTIONS for q, code, _ in level}
    sb = Sandbox()
    tasks = demo_tasks(40, seed=0)
    assert {t.prompt[-1]["content"] for t in tasks} == set(programs)  # every operation occurs, nothing else
    for t in tasks:
        ws = sb.workspace()
        try:
            ws.write(t.environment["files"])
            out = sb.run_python(programs[t.prompt[-1]["content"]], workspace=ws).stdout.strip()
        finally:
            ws.close()
        assert out == t.verifier["expected"], (t.prompt[-1]["content"], t.environment, out)
        # the answer counts when the agent's program printed it (source: tool), not when it is only stated
        q = t.prompt[-1]["content"]
        said = [*t.prompt, {"role": "assistant", "content": f"The answer is {out}."}]
        did = [
            *t.prompt,
            {
                "role": "assistant",
                "content": "",
                "tool_calls": [
                    {"type": "function", "function": {"name": "python", "arguments": {"code": programs[q]}}}
                ],
            },
            {"role": "tool", "content": out + "\n"},
            {"role": "assistant", "content": "The answer is 0."},
        ]
        assert verify(t, did).reward == 1.0 and verify(t, said).reward == 0.0
    code_len = {lvl: min(len(programs[q]) for q, *_ in QUESTIONS[lvl]) for lvl in range(5)}
    assert code_len[0] < code_len[1] <= code_len[2] < code_len[3]  # harder levels need longer programs
    import random

    rng = random.Random(0)
    seen = {m["content"] for _ in range(300) for m in _conversation(rng)["messages"] if m["role"] == "user"}
    assert UNSEEN not in seen and UNSEEN in {t.prompt[-1]["content"] for t in tasks}


def test_the_sft_phrasing_is_what_the_verifier_reads():
    import random

    conv = _conversation(random.Random(5))
    final = [m for m in conv["messages"] if m["role"] == "assistant" and not m.get("tool_calls")][0]["content"]
    assert final_answer(final) is not None  # "The answer is X." as SFT teaches it
    assert demo_tasks(1)[0].tools == [PYTHON_TOOL]


def test_answer_verifier():
    t = demo_tasks(1)[0]
    t = Task(**{**t.__dict__, "verifier": {"kind": "answer", "expected": t.verifier["expected"]}})  # source final
    exp = t.verifier["expected"]
    conv = [{"role": "user", "content": "q"}, {"role": "assistant", "content": f"The answer is {exp}."}]
    assert verify(t, conv).passed
    assert verify(t, f"ANSWER: {exp}").passed
    assert not verify(t, "The answer is 12345678.").passed
    v = verify(t, "I do not know")
    assert v.reward == 0.0 and "no final answer" in v.reason
    assert final_answer("The answer is [1, 2, 3].") == "[1, 2, 3]"


def test_task_format_round_trip_and_errors(tmp_path):
    tasks = demo_tasks(5)
    write_tasks_jsonl(tmp_path / "t.jsonl", tasks)
    assert read_tasks_jsonl(tmp_path / "t.jsonl") == tasks
    listed, missing = (
        st.tasks
        for st in stage_configs(
            rollout_stage(tasks={"family": "jsonl", "path": str(tmp_path / "t.jsonl"), "count": 2}),
            rollout_stage(tasks={"family": "jsonl", "path": str(tmp_path / "nope.jsonl")}),
        )
    )
    assert listed is not None and missing is not None
    assert load_tasks(listed) == tasks[:2]
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"id": "x", "prompt": "hi", "verifier": {"kind": "magic"}}) + "\n")
    with pytest.raises(TaskFormatError, match=r"bad.jsonl:1 \(x\): field 'verifier.kind'"):
        read_tasks_jsonl(bad)
    bad.write_text(json.dumps({"id": "x", "prompt": "hi"}) + "\n")
    with pytest.raises(TaskFormatError, match="missing field 'verifier'"):
        read_tasks_jsonl(bad)
    bad.write_text(tasks[0].to_json() + "\n" + tasks[0].to_json() + "\n")
    with pytest.raises(TaskFormatError, match="duplicate task id"):
        read_tasks_jsonl(bad)
    with pytest.raises(TaskFormatError, match="tasks.path: no such file"):
        load_tasks(missing)
    t = Task.from_dict({"id": "s", "prompt": "plain string", "verifier": {"kind": "answer", "expected": "1"}})
    assert t.prompt == [{"role": "user", "content": "plain string"}] and t.family == "jsonl"
