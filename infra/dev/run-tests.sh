#!/usr/bin/env bash
# Both test runners, one after the other (the second runs even if the first fails), reports under $1.
# Extra arguments for each runner: JEST_ARGS and PYTEST_ARGS (e.g. PYTEST_ARGS="tests/test_model.py").
set -uo pipefail
results=$1
rc=0
# Tests run trainer jobs, inference servers and agents side by side (two jest workers, concurrent pipelines):
# one PyTorch thread per process, or OpenMP's thread per core oversubscribes the machine several times over.
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}" MKL_NUM_THREADS="${MKL_NUM_THREADS:-1}"
echo "==> jest"
# shellcheck disable=SC2086
npx jest --ci --json --outputFile="$results/jest.json" ${JEST_ARGS:-} || rc=1
echo "==> pytest"
# shellcheck disable=SC2086
(cd trainer && ../.venv/bin/python -m pytest -p no:cacheprovider --junitxml="$results/pytest.xml" ${PYTEST_ARGS:-}) || rc=1
exit $rc
