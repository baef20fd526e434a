#!/usr/bin/env bash
# `make test`: type check and lint the TypeScript and the Python, then jest and pytest against a private local
# stack (with-stack.sh), and one closing line `N passed, N failed` summing both runners. A failed check is
# named in the closing lines (`step failed: NAME`) and fails the run.
set -uo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
results="$root/.data/test-results"
rm -rf "$results"; mkdir -p "$results"

failed_steps=()
step() { # name command...
  local name=$1; shift
  echo "==> $name"
  "$@" || failed_steps+=("$name")
}
step typecheck npm run --silent typecheck
step lint npm run --silent lint
step ruff bash infra/dev/check-python.sh lint
step mypy bash infra/dev/check-python.sh typecheck
step tests bash infra/dev/with-stack.sh bash infra/dev/run-tests.sh "$results"

summary=$(.venv/bin/python infra/dev/summarize-tests.py "$results")
echo "$summary" >"$results/summary.txt"
echo
for s in "${failed_steps[@]}"; do echo "step failed: $s"; done
echo "$summary"
[[ ${#failed_steps[@]} -eq 0 && "$summary" == *" 0 failed"* ]]
