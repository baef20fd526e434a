#!/usr/bin/env bash
# The Python checks, one definition for `make test` (infra/dev/test.sh) and `make lint-python` /
# `make typecheck-python`:
#   lint       ruff check and ruff format --check over trainer/, bench/ and infra/ (settings:
#              trainer/pyproject.toml; ruff.toml applies them outside trainer/)
#   typecheck  mypy over the trainer package and its tests (settings: trainer/pyproject.toml [tool.mypy])
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
bin="$root/.venv/bin"
case "${1:-}" in
  lint)
    cd "$root"
    rc=0
    "$bin/ruff" check trainer bench infra || rc=1
    "$bin/ruff" format --check trainer bench infra || rc=1 # both run, so one look shows every finding
    exit $rc
    ;;
  typecheck)
    cd "$root/trainer"
    "$bin/mypy"
    ;;
  *)
    echo "usage: $0 lint|typecheck" >&2
    exit 2
    ;;
esac
