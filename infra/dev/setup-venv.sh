#!/usr/bin/env bash
# A tool's own virtualenv in the cache outside the checkout, built from a pinned requirements file and keyed
# by its hash (a changed pin builds a new one; an interrupted build has no .complete marker and starts over).
#   setup-venv.sh NAME REQUIREMENTS            build if missing; progress on stderr
#   setup-venv.sh --path NAME REQUIREMENTS     print the venv's path (built or not) and exit
set -euo pipefail
print_path=0
if [[ ${1:-} == --path ]]; then print_path=1; shift; fi
name=$1 req=$2
CACHE="${TRAINFLOW_CACHE:-$HOME/.cache/trainflow}"
venv="$CACHE/venvs/$name-$(sha256sum "$req" | cut -c1-16)"
if [[ $print_path -eq 1 ]]; then echo "$venv"; exit 0; fi
log() { printf '[setup-%s] %s\n' "$name" "$*" >&2; }
if [[ -f "$venv/.complete" ]]; then
  log "up to date: $venv"
  exit 0
fi
log "creating $venv from $req (once; cached outside the checkout)"
rm -rf "$venv"
python3 -m venv "$venv"
"$venv/bin/pip" install --quiet --upgrade pip
"$venv/bin/pip" install --progress-bar off -r "$req" 2>&1 \
  | grep --line-buffered -E '^(Collecting|Successfully|ERROR)' | sed -u "s/^/[setup-$name] /" >&2
[[ ${PIPESTATUS[0]} -eq 0 ]] || { log "pip install failed (see above)"; exit 1; }
touch "$venv/.complete"
log "ready: $venv"
