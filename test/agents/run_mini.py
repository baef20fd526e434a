"""Runs mini-swe-agent (PyPI, unchanged) on the task trainflow gives it: its DefaultAgent, its LitellmModel
(litellm's OpenAI provider pointed at OPENAI_BASE_URL, the proxy session) and its LocalEnvironment (commands run
in the working folder, which is the task workspace inside trainflow's sandbox; its bubblewrap environment is not
needed there). Short templates keep the prompt inside the tiny test model's context; everything else is the
packaged mini.yaml's.

    python run_mini.py     (task text: TRAINFLOW_TASK_PROMPT; STEP_LIMIT, AGENT_MAX_TOKENS, AGENT_TEMPERATURE optional)

Each step is one model call; a reply without a valid bash tool call is a format error, after which mini-swe-agent
drops that reply and asks again from the history before it (a new branch, not a continuation).
"""

import os
from pathlib import Path

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # no network in the sandbox: no price-list fetch
os.environ.setdefault("MSWEA_SILENT_STARTUP", "1")

import yaml  # noqa: E402
from minisweagent import package_dir  # noqa: E402
from minisweagent.agents.default import DefaultAgent  # noqa: E402
from minisweagent.environments.local import LocalEnvironment  # noqa: E402
from minisweagent.models.litellm_model import LitellmModel  # noqa: E402

config = yaml.safe_load((Path(package_dir) / "config" / "mini.yaml").read_text())
agent_cfg = {
    **config["agent"],
    "system_template": "You can run bash commands.",
    "instance_template": "{{task}}\nFix it, then run: echo COMPLETE_TASK_AND_SUBMIT_FINAL_OUTPUT",
    "step_limit": int(os.environ.get("STEP_LIMIT", "2")),
    "cost_limit": 0,
    "output_path": None,
}
model = LitellmModel(
    model_name="openai/policy",
    model_kwargs={
        "api_base": os.environ["OPENAI_BASE_URL"],
        "api_key": os.environ["OPENAI_API_KEY"],
        "max_tokens": int(os.environ.get("AGENT_MAX_TOKENS", "16")),
        "drop_params": False,
        **({"temperature": float(os.environ["AGENT_TEMPERATURE"])} if "AGENT_TEMPERATURE" in os.environ else {}),
    },
    cost_tracking="ignore_errors",
)
env = LocalEnvironment(cwd=os.getcwd(), timeout=20)
agent = DefaultAgent(model, env, **agent_cfg)
try:
    result = agent.run(os.environ["TRAINFLOW_TASK_PROMPT"])
except Exception as e:  # the step limit ends the run with an exception in some versions: the workspace decides
    result = {"exit_status": type(e).__name__}
print("mini-swe-agent:", result.get("exit_status"), "after", agent.n_calls, "model calls")
