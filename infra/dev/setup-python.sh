#!/usr/bin/env bash
# Creates the trainer's virtualenv from trainer/requirements.txt in the cache outside the checkout, keyed by
# the file's hash (so a fresh clone reuses it and a changed pin builds a new one), and links it as .venv.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
CACHE="${TRAINFLOW_CACHE:-$HOME/.cache/trainflow}"
req="$root/trainer/requirements.txt"
hash=$(sha256sum "$req" | cut -c1-16)
venv="$CACHE/venvs/trainer-$hash"
log() { printf '[setup-python] %s\n' "$*"; }
if [[ -f "$venv/.complete" ]]; then
  log "trainer environment up to date: $venv"
else
  # An interrupted install leaves no .complete marker: start that venv over rather than trust it.
  log "creating the trainer environment in $venv (PyTorch from PyPI: a few minutes the first time)"
  rm -rf "$venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --upgrade pip
  "$venv/bin/pip" install --progress-bar off -r "$req" 2>&1 \
    | grep --line-buffered -E '^(Collecting|Successfully|ERROR)' | sed -u 's/^/[setup-python] /'
  [[ ${PIPESTATUS[0]} -eq 0 ]] || { log "pip install failed (see above)"; exit 1; }
  touch "$venv/.complete"
fi
ln -sfn "$venv" "$root/.venv"
