#!/usr/bin/env bash
# The bring-your-own-agent test environment (the official `openai` SDK and `mini-swe-agent`), from
# infra/dev/agents-requirements.txt, linked as .venv-agents. Built with the system's /usr/bin/python3: agent
# programs run inside trainflow's sandbox as a private uid, which can reach /usr but not an interpreter
# installed under /root.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
exec bash "$root/infra/dev/setup-venv.sh" --python /usr/bin/python3 --link .venv-agents agents \
  "$root/infra/dev/agents-requirements.txt"
