#!/usr/bin/env bash
# Both test runners, one after the other (the second runs even if the first fails), reports under $1.
# Extra arguments for each runner: JEST_ARGS and PYTEST_ARGS (e.g. PYTEST_ARGS="tests/test_model.py").
set -uo pipefail
results=$1
rc=0
echo "==> jest"
# shellcheck disable=SC2086
npx jest --ci --json --outputFile="$results/jest.json" ${JEST_ARGS:-} || rc=1
echo "==> pytest"
# shellcheck disable=SC2086
(cd trainer && ../.venv/bin/python -m pytest -p no:cacheprovider --junitxml="$results/pytest.xml" ${PYTEST_ARGS:-}) || rc=1
exit $rc
