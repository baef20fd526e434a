#!/usr/bin/env bash
# A tool's own virtualenv in the cache outside the checkout, built from a pinned requirements file and keyed
# by its hash: a fresh clone reuses it, a changed pin builds a new one, and an interrupted build has no
# .complete marker and starts over. Every Python environment trainflow installs is made here, except vLLM's
# (setup-vllm.sh: its CPU wheel needs a three-step install).
#   setup-venv.sh [--python PY] [--link PATH] NAME REQUIREMENTS   build if missing (progress on stderr);
#                                                                 --link: symlink PATH (from the repo root) to it
#   setup-venv.sh --path NAME REQUIREMENTS                        print the venv's path (built or not) and exit
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
print_path=0 py=python3 link=
while [[ ${1:-} == --* ]]; do
  case $1 in
    --path) print_path=1; shift ;;
    --python) py=$2; shift 2 ;;
    --link) link=$2; shift 2 ;;
    *) echo "setup-venv.sh: unknown option $1" >&2; exit 2 ;;
  esac
done
name=$1 req=$2
CACHE="${TRAINFLOW_CACHE:-$HOME/.cache/trainflow}"
venv="$CACHE/venvs/$name-$(sha256sum "$req" | cut -c1-16)"
if [[ $print_path -eq 1 ]]; then echo "$venv"; exit 0; fi
log() { printf '[setup-%s] %s\n' "$name" "$*" >&2; }
if [[ -f "$venv/.complete" ]]; then
  log "up to date: $venv"
else
  [[ -x $(command -v "$py") ]] || { log "needs $py (apt-get install -y python3 python3-venv)"; exit 1; }
  log "creating $venv from $req (once; cached outside the checkout)"
  rm -rf "$venv"
  "$py" -m venv "$venv"
  "$venv/bin/pip" install --quiet --upgrade pip
  "$venv/bin/pip" install --progress-bar off -r "$req" 2>&1 \
    | grep --line-buffered -E '^(Collecting|Successfully|ERROR)' | sed -u "s/^/[setup-$name] /" >&2
  [[ ${PIPESTATUS[0]} -eq 0 ]] || { log "pip install failed (see above)"; exit 1; }
  touch "$venv/.complete"
  log "ready: $venv"
fi
if [[ -n $link ]]; then ln -sfn "$venv" "$root/$link"; fi
