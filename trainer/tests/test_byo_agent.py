"""Bring your own agent (`rollout.agent`): an RFT stage end to end (inference server, data-plane driver and proxy,
agent worker, trainer) whose episodes are programs run in the sandbox: a scripted agent written with the official
`openai` SDK, and mini-swe-agent from PyPI. Their trajectories are the proxy's token records, the reward is the
verifier's verdict on the final workspace (demo tasks: the workspace's answer.txt; swe tasks: the hidden tests).

With the random tiny model and the demo's byte-level BPE, re-sent text tokenises to other ids than the sampled
ones: drift, detected and fixed. With the canonical policy (tests/canonical_policy.py: a character-level
tokenizer and the tiny model SFT'd to answer with one bash call) there is none, honestly: every turn of both
agents continues the previous one token for token.

The agent programs live in the agents venv (infra/dev/setup-agents.sh, `make setup` builds it).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from canonical_policy import REPLY_TEXT, char_tokenizer, train_policy
from specs import job_spec

from trainflow_trainer.agent.byo import ByoAgent, run_episode
from trainflow_trainer.rl.ledger_check import read_ledger
from trainflow_trainer.sandbox import Sandbox
from trainflow_trainer.tasks import Task
from trainflow_trainer.tokenizer import IM_END, Tokenizer

TRAINER = Path(__file__).resolve().parents[1]
ROOT = TRAINER.parent
AGENTS_PYTHON = ROOT / ".venv-agents" / "bin" / "python"
SCRIPTED = ROOT / "test" / "agents" / "scripted_agent.py"
MINI = ROOT / "test" / "agents" / "run_mini.py"

needs_agents = pytest.mark.skipif(
    not AGENTS_PYTHON.exists(), reason="the agents venv is missing: run `make setup` (infra/dev/setup-agents.sh)"
)


def rft_stage(command: list[str], env: dict[str, str], count: int, group_size: int, tasks: dict | None = None) -> dict:
    return {
        "name": "rft",
        "kind": "rft",
        "tasks": tasks or {"family": "demo", "count": count},
        "rollout": {
            "group_size": group_size,
            "concurrency": count * group_size,
            "max_turns": 1,
            "max_new_tokens": 8,
            "agent": {"command": command, "env": env, "timeout": "150s"},
        },
        "rft": {"keep": "top", "top_fraction": 0.5},
        "train": {"steps": 1, "batch_size": 2},
    }


def run_rft(
    tmp_path: Path, tokenizer: Path, stage: dict, checkpoint: Path | None = None
) -> tuple[subprocess.CompletedProcess, list[dict]]:
    """The stage as a job, from the random tiny model or from `checkpoint`; its ledger's trajectories."""
    init = {"checkpoint": str(checkpoint)} if checkpoint else {"preset": "tiny"}
    model = {"init": init, "tokenizer": {"path": str(tokenizer)}, "dtype": "fp32"}
    work = tmp_path / "work"
    spec = job_spec(
        stage,
        model,
        str(tmp_path / "out" / "rft"),
        work,
        stage_index=1 if checkpoint else 0,
        input_checkpoint=str(checkpoint) if checkpoint else None,
    )
    (tmp_path / "spec.json").write_text(json.dumps(spec))
    r = subprocess.run(
        [sys.executable, "-m", "trainflow_trainer.job", "--spec", str(tmp_path / "spec.json")],
        cwd=TRAINER,
        capture_output=True,
        text=True,
        timeout=400,
    )
    assert r.returncode == 0, r.stderr[-4000:]
    groups = [e["record"] for e in read_ledger(work / "ledger") if e["record"].get("kind") == "group"]
    return r, [t for g in groups for t in g["trajectories"]]


def path_of(tree: dict) -> list[dict]:
    """The nodes from the root to the only leaf; fails if the tree branches (a turn that did not continue)."""
    nodes = []
    while tree["children"]:
        assert len(tree["children"]) == 1, "the session's tree branches: a turn did not continue the previous one"
        tree = tree["children"][0]
        nodes.append(tree)
    return nodes


def check_recorded(t: dict, turns: int) -> None:
    """Token for token: every turn continues the previous one (one path), every generated token carries its
    log-prob and version, and any re-tokenised text was answered with the recorded ids (drift fixed)."""
    assert len(t["turns"]) >= turns
    assert [u["parent"] for u in t["turns"][1:]] == [u["id"] for u in t["turns"][:-1]]
    nodes = path_of(t["tree"])
    generated = [(lp, v) for n in nodes for lp, v in zip(n["logprobs"], n["versions"]) if lp is not None]
    assert generated and all(v == 0 for _, v in generated)
    assert t["drift"]["detected"] == t["drift"]["fixed"]


@needs_agents
def test_scripted_openai_sdk_agent_runs_an_rft_stage(tmp_path, tokenizer):
    # four tasks, two of them "How many" questions; the groups' tasks are drawn (seeded) before any finishes.
    # The engine samples unseeded, so whether a turn's text re-tokenises to other ids is chance: 24 tokens a
    # turn make at least one drifted turn among the 8 episodes all but certain (8 tokens once gave none).
    stage = rft_stage([str(AGENTS_PYTHON), str(SCRIPTED)], {"AGENT_MAX_TOKENS": "24"}, count=4, group_size=2)
    r, trajectories = run_rft(tmp_path, tokenizer, stage)
    assert "rft rollouts: 8 episodes" in r.stderr
    assert len(trajectories) == 8
    assert {t["reward"] for t in trajectories} == {0.0, 1.0}  # both kinds were drawn
    tasks = {
        t["id"]: t for t in (json.loads(line) for line in (tmp_path / "work" / "tasks.jsonl").read_text().splitlines())
    }
    # the random model's samples are not the BPE's canonical segmentation of their text: drift, detected and
    # answered with the recorded ids (check_recorded)
    assert sum(t["drift"]["detected"] for t in trajectories) > 0
    for t in trajectories:
        check_recorded(t, turns=2)
        # graded from the workspace: the agent wrote the right answer.txt for the "How many" questions only,
        # and claimed success every time
        question = tasks[t["task_id"]]["prompt"][-1]["content"]
        assert t["reward"] == (1.0 if question.startswith("How many") else 0.0), (question, t["reward"])


@pytest.fixture(scope="module")
def swe_tasks_file(tmp_path_factory) -> Path:
    """One SWE instance (the calc repository of test_swe_grading: add() subtracts), its environment built."""
    from test_swe_grading import BUGGY, F2P, GOOD, HIDDEN_TEST, OTHER_TEST, P2P, diff

    from trainflow_trainer.tasks.swe import SweInstance, build_environment, write_instances
    from trainflow_trainer.tasks.swe.instance import EnvironmentSpec, Snapshot

    repo = tmp_path_factory.mktemp("calc-repo")
    (repo / "calc").mkdir()
    (repo / "calc" / "__init__.py").write_text(GOOD)
    (repo / "tests").mkdir()
    (repo / "tests" / "test_add.py").write_text(HIDDEN_TEST)
    (repo / "tests" / "test_clamp.py").write_text(OTHER_TEST)
    inst = SweInstance(
        instance_id="calc__bug.add",
        repo="example/calc",
        base_commit="v1",
        patch=diff("calc/__init__.py", BUGGY, GOOD),
        problem_statement="add(2, 3) returns -1 instead of 5.",
        FAIL_TO_PASS=F2P,
        PASS_TO_PASS=P2P,
        snapshot=Snapshot(kind="dir", path=str(repo), setup_patch=diff("calc/__init__.py", GOOD, BUGGY)),
        environment=EnvironmentSpec(requirements=["pytest==8.3.4"]),
    )
    build_environment(inst)
    path = tmp_path_factory.mktemp("swe") / "instances.jsonl"
    write_instances(path, [inst])
    return path


@needs_agents
def test_scripted_agent_fixes_a_swe_task_graded_by_the_hidden_tests(tmp_path, tokenizer, swe_tasks_file):
    stage = rft_stage(
        [str(AGENTS_PYTHON), str(SCRIPTED)], {}, 1, 2, tasks={"family": "swe", "path": str(swe_tasks_file)}
    )
    r, trajectories = run_rft(tmp_path, tokenizer, stage)
    assert "rft rollouts: 2 episodes" in r.stderr
    for t in trajectories:
        check_recorded(t, turns=2)
        assert t["reward"] == 1.0  # its edit of the repository copy passes FAIL_TO_PASS and PASS_TO_PASS


def test_the_canonical_tokenizer_gives_back_any_ids_sampled_and_the_demo_bpe_does_not(tokenizer):
    """Why the canonical policy cannot drift and a random model on the demo's BPE does: any id sequence of the
    character-level tokenizer (specials and <unk> included) is the encoding of its own text; the BPE's are not."""
    import random

    rng = random.Random(0)
    char, bpe = char_tokenizer(), Tokenizer.load(tokenizer)
    for _ in range(300):
        ids = [rng.randrange(char.vocab_size) for _ in range(rng.randrange(1, 64))]
        assert char.encode(char.decode(ids)) == ids
    samples = [[rng.randrange(bpe.vocab_size) for _ in range(16)] for _ in range(50)]
    assert sum(bpe.encode(bpe.decode(ids)) != ids for ids in samples) > 25


@pytest.fixture(scope="module")
def canonical_policy(tmp_path_factory, swe_tasks_file) -> tuple[Path, Path]:
    """(checkpoint, tokenizer.json) of the tiny model SFT'd on the swe task's prompt to answer with the fix."""
    from trainflow_trainer.agent.byo import task_prompt
    from trainflow_trainer.contract import TasksConfig
    from trainflow_trainer.tasks import load_tasks

    (task,) = load_tasks(TasksConfig.model_validate({"family": "swe", "path": str(swe_tasks_file)}))
    return train_policy(tmp_path_factory.mktemp("policy"), task_prompt(task))


def generated_runs(nodes: list[dict]) -> list[list[int]]:
    """The runs of sampled tokens (those with a log-prob) along a path, in order: one per turn."""
    runs: list[list[int]] = []
    last = False
    for n in nodes:
        for tok, lp in zip(n["tokens"], n["logprobs"]):
            if lp is not None and not last:
                runs.append([])
            if lp is not None:
                runs[-1].append(tok)
            last = lp is not None
    return runs


def check_no_drift(t: dict, turns: int, tokenizer: Path) -> None:
    """No drift, honestly: every turn's prompt ids extend the previous turn's prompt + sampled ids (one path,
    nothing re-tokenised, nothing fixed), and the sampled ids are the policy's reply, turn after turn."""
    assert t["drift"] == {"detected": 0, "fixed": 0}
    assert len(t["turns"]) == turns
    assert [u["parent"] for u in t["turns"]] == [None] + [u["id"] for u in t["turns"][:-1]]
    assert not any(u["drift"] or u["fixed"] for u in t["turns"])
    assert [u["finish_reason"] for u in t["turns"]] == ["tool_calls"] * turns
    nodes = path_of(t["tree"])
    runs = generated_runs(nodes)
    assert len(runs) == turns
    tok = Tokenizer.load(tokenizer)
    assert [tok.decode(r) for r in runs] == [REPLY_TEXT + IM_END] * turns
    assert all(v == 0 for n in nodes for lp, v in zip(n["logprobs"], n["versions"]) if lp is not None)


def check_graded(t: dict) -> None:
    """Graded by the hidden tests (FAIL_TO_PASS, PASS_TO_PASS), their outcomes kept with the trajectory."""
    from test_swe_grading import F2P, P2P

    assert t["reward"] == 1.0
    assert t["tests"] == {name: "passed" for name in F2P + P2P}


@needs_agents
def test_scripted_agent_sending_back_the_sdks_messages_records_no_drift(tmp_path, swe_tasks_file, canonical_policy):
    """Three turns with the openai SDK (streamed, then its own message objects sent back): the bash calls the
    policy makes are run by the agent, which does nothing itself, and fix the bug."""
    checkpoint, tokenizer = canonical_policy
    env = {"AGENT_TURNS": "3", "AGENT_MAX_TOKENS": "120", "AGENT_OWN_FIX": "0", "AGENT_TEMPERATURE": "0"}
    stage = rft_stage(
        [str(AGENTS_PYTHON), str(SCRIPTED)], env, 1, 2, tasks={"family": "swe", "path": str(swe_tasks_file)}
    )
    r, trajectories = run_rft(tmp_path, tokenizer, stage, checkpoint)
    assert "rft rollouts: 2 episodes" in r.stderr
    assert len(trajectories) == 2
    for t in trajectories:
        check_no_drift(t, 3, tokenizer)
        check_graded(t)


@needs_agents
def test_mini_swe_agent_runs_several_steps_of_an_rft_stage_without_drift(tmp_path, swe_tasks_file, canonical_policy):
    """mini-swe-agent (litellm) for three steps: each step's reply is a valid bash call, so it continues the
    conversation (a random model's replies are format errors, which mini-swe-agent drops: every step a new
    branch after the task prompt); its commands fix the bug, the hidden tests grade it."""
    checkpoint, tokenizer = canonical_policy
    env = {"STEP_LIMIT": "3", "AGENT_MAX_TOKENS": "120", "AGENT_TEMPERATURE": "0"}
    stage = rft_stage([str(AGENTS_PYTHON), str(MINI)], env, 1, 2, tasks={"family": "swe", "path": str(swe_tasks_file)})
    r, trajectories = run_rft(tmp_path, tokenizer, stage, checkpoint)
    assert "rft rollouts: 2 episodes" in r.stderr
    assert len(trajectories) == 2
    for t in trajectories:
        check_no_drift(t, 3, tokenizer)
        check_graded(t)


def test_reference_agent_fixes_a_swe_task_with_its_tool_set(swe_tasks_file):
    """The reference agent on a swe task: the SWE tools act on the repository copy (the hidden tests are not
    in it), bash runs with the instance's venv, submit ends the episode, the grade is the hidden tests'."""
    from test_agent import Stub, tool

    from trainflow_trainer.agent import Agent, ChatClient
    from trainflow_trainer.contract import TasksConfig
    from trainflow_trainer.tasks import load_tasks

    (task,) = load_tasks(TasksConfig.model_validate({"family": "swe", "path": str(swe_tasks_file)}))
    turns = [
        [tool("bash", 0, command="ls tests; python -c 'import pytest; print(pytest.__version__)'")],
        [
            tool(
                "str_replace_editor",
                1,
                command="str_replace",
                path="calc/__init__.py",
                old_str="a - b",
                new_str="a + b",
            )
        ],
        [tool("submit", 2)],
    ]
    stub = Stub(lambda messages: {"content": "", "tool_calls": turns[sum(m["role"] == "assistant" for m in messages)]})
    try:
        with Agent(ChatClient(stub.url), Sandbox(), max_turns=5) as agent:
            ep = agent.run(task)
    finally:
        stub.close()
    out = {m["tool_call_id"]: m["content"] for m in ep.messages if m["role"] == "tool"}
    assert out["call_0"] == "test_clamp.py\n8.3.4"  # the hidden test_add.py is not there; the venv's pytest is
    assert out["call_1"] == "edited calc/__init__.py"
    assert (ep.stop, ep.reward, ep.passed) == ("submit", 1.0, True), ep.verdict
    assert [t["function"]["name"] for t in stub.requests[0]["body"]["tools"]] == [
        "bash",
        "str_replace_editor",
        "submit",
    ]


@needs_agents
def test_the_agent_program_reaches_only_its_proxy(tmp_path):
    """The sandbox's one address is the bridge to the proxy: the host's other ports are out of reach."""
    import http.server
    import threading

    seen: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            seen.append(self.headers.get("Authorization", ""))
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b"proxy")

        def log_message(self, *a: object) -> None:
            pass

    proxy = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    other = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    for s in (proxy, other):
        threading.Thread(target=s.serve_forever, daemon=True).start()
    probe = (
        "import os, socket, urllib.request\n"
        "base = os.environ['OPENAI_BASE_URL']\n"
        "auth = {'Authorization': 'Bearer ' + os.environ['OPENAI_API_KEY']}\n"
        "req = urllib.request.Request(base + '/models', headers=auth)\n"
        "got = urllib.request.urlopen(req).read().decode()\n"
        f"try:\n    socket.create_connection(('127.0.0.1', {other.server_address[1]}), timeout=2); other = 'reached'\n"
        "except OSError as e:\n    other = 'refused'\n"
        "open('answer.txt', 'w').write(got + ' ' + other)\n"
    )
    task = Task(
        id="probe",
        family="jsonl",
        prompt=[{"role": "user", "content": "x"}],
        verifier={"kind": "answer", "expected": "proxy refused"},
    )
    agent = ByoAgent([str(AGENTS_PYTHON), "-c", probe], {}, 60)
    try:
        ep = run_episode(task, f"http://127.0.0.1:{proxy.server_address[1]}/v1", "sess-key", agent, Sandbox())
    finally:
        proxy.shutdown()
        other.shutdown()
    assert ep["stop"] == "exit", ep
    assert ep["reward"] == 1.0, ep["verdict"]
    assert seen == ["Bearer sess-key"]  # the proxy got the session's key; the other server got nothing
