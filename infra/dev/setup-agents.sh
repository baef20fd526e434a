#!/usr/bin/env bash
# Creates the bring-your-own-agent test environment (the official `openai` SDK and `mini-swe-agent`) from
# infra/dev/agents-requirements.txt in the cache outside the checkout, keyed by the file's hash, and links it
# as .venv-agents. It is built with the system's /usr/bin/python3: agent programs run inside trainflow's
# sandbox as a private uid, which can reach /usr but not an interpreter installed under /root.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
CACHE="${TRAINFLOW_CACHE:-$HOME/.cache/trainflow}"
req="$root/infra/dev/agents-requirements.txt"
hash=$(sha256sum "$req" | cut -c1-16)
venv="$CACHE/venvs/agents-$hash"
py=/usr/bin/python3
log() { printf '[setup-agents] %s\n' "$*"; }
if [[ -f "$venv/.complete" ]]; then
  log "agents environment up to date: $venv"
else
  [[ -x $py ]] || { log "needs $py (apt-get install -y python3 python3-venv)"; exit 1; }
  # An interrupted install leaves no .complete marker: start that venv over rather than trust it.
  log "creating the agents environment in $venv (openai, mini-swe-agent and litellm: a minute or two)"
  rm -rf "$venv"
  "$py" -m venv "$venv"
  "$venv/bin/pip" install --quiet --upgrade pip
  "$venv/bin/pip" install --progress-bar off -r "$req" 2>&1 \
    | grep --line-buffered -E '^(Collecting|Successfully|ERROR)' | sed -u 's/^/[setup-agents] /'
  [[ ${PIPESTATUS[0]} -eq 0 ]] || { log "pip install failed (see above)"; exit 1; }
  touch "$venv/.complete"
fi
ln -sfn "$venv" "$root/.venv-agents"
