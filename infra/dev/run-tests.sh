#!/usr/bin/env bash
# Both test runners, reports under $1; every runner runs even if another fails.
# Extra arguments for each runner: JEST_ARGS and PYTEST_ARGS (e.g. PYTEST_ARGS="tests/test_model.py").
#
# Without JEST_ARGS the demo pipeline test (test/rl/demo-reward.test.ts, two pipelines, CPU-bound for ~11
# minutes) runs in a second jest process beside the other jest files and pytest, which mostly wait on the
# services and subprocesses they drive; run one after the other they took 21 minutes, side by side ~15.
set -uo pipefail
results=$1
rc=0
# Tests run trainer jobs, inference servers and agents side by side (two jest workers, concurrent pipelines):
# one PyTorch thread per process, or OpenMP's thread per core oversubscribes the machine several times over.
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}" MKL_NUM_THREADS="${MKL_NUM_THREADS:-1}"
DEMO_TEST=test/rl/demo-reward.test.ts

demo_pid=
if [[ -z "${JEST_ARGS:-}" ]]; then
  echo "==> jest: $DEMO_TEST (in the background; its output follows the other runners')"
  npx jest --ci --json --outputFile="$results/jest-demo.json" "$DEMO_TEST" >"$results/jest-demo.log" 2>&1 &
  demo_pid=$!
  jest_args=(--testPathIgnorePatterns "$DEMO_TEST")
else
  # shellcheck disable=SC2206
  jest_args=(${JEST_ARGS})
fi
echo "==> jest"
npx jest --ci --json --outputFile="$results/jest.json" "${jest_args[@]}" || rc=1
echo "==> pytest"
# shellcheck disable=SC2086
(cd trainer && ../.venv/bin/python -m pytest -p no:cacheprovider --junitxml="$results/pytest.xml" ${PYTEST_ARGS:-}) || rc=1
if [[ -n "$demo_pid" ]]; then
  wait "$demo_pid" || rc=1
  echo "==> jest: $DEMO_TEST"
  cat "$results/jest-demo.log"
  # A run that died before reporting must not vanish from the summary: record it as one failed test.
  [[ -f "$results/jest-demo.json" ]] ||
    echo '{"numPassedTests":0,"numFailedTests":1,"numPendingTests":0}' >"$results/jest-demo.json"
fi
exit $rc
