#!/usr/bin/env bash
# Both test runners, reports under $1; every runner runs even if another fails.
# Extra arguments for each runner: JEST_ARGS and PYTEST_ARGS (e.g. PYTEST_ARGS="tests/test_model.py"); with
# either set, only the runners asked for run, one after the other, in the foreground.
#
# Without them the suite runs as four lanes side by side, each its own process with its own report:
#   jest-demo    the pipeline tests, one after the other: the demo (test/rl/demo-reward.test.ts: two pipelines,
#                CPU-bound, ~11 min), then the SWE demo (test/rl/swe-demo.test.ts: configs/swe-demo.yaml reduced,
#                curate → SFT → RFT → RL, ~4 min alone)
#   jest         every other jest file (one worker: the integration tests share one stack)
#   pytest       the trainer's tests but vLLM's
#   vllm         the tests against a real vLLM (each engine start costs minutes of CPU on 2 cores): pytest's
#                (report pytest-vllm), then jest's (report jest-vllm)
# Most tests wait on the services, subprocesses, torchrun ranks and engines they drive, so side by side the
# suite takes about as long as its longest lane rather than the sum of all four.
set -uo pipefail
results=$1
rc=0
# Tests run trainer jobs, inference servers and agents side by side (jest workers, concurrent pipelines):
# one PyTorch thread per process, or OpenMP's thread per core oversubscribes the machine several times over.
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}" MKL_NUM_THREADS="${MKL_NUM_THREADS:-1}"
DEMO_TEST=test/rl/demo-reward.test.ts
SWE_DEMO_TEST=test/rl/swe-demo.test.ts
VLLM_TESTS=(tests/test_vllm_engine.py tests/test_vllm_fleet.py)
VLLM_JEST=(test/agents/sdk-fidelity-vllm.test.ts test/rl/vllm-pipeline.test.ts)

run_jest() { # report-name jest-args...
  local name=$1; shift
  npx jest --ci --json --outputFile="$results/$name.json" "$@"
}
run_pytest() { # report-name pytest-args...
  local name=$1; shift
  (cd trainer && ../.venv/bin/python -m pytest -p no:cacheprovider --junitxml="$results/$name.xml" "$@")
}

if [[ -n "${JEST_ARGS:-}${PYTEST_ARGS:-}" ]]; then
  # shellcheck disable=SC2086
  if [[ -n "${JEST_ARGS:-}" ]]; then echo "==> jest"; run_jest jest ${JEST_ARGS} || rc=1; fi
  # shellcheck disable=SC2086
  if [[ -n "${PYTEST_ARGS:-}" ]]; then echo "==> pytest"; run_pytest pytest ${PYTEST_ARGS} || rc=1; fi
  exit $rc
fi

ignore_vllm=()
for f in "${VLLM_TESTS[@]}"; do ignore_vllm+=(--ignore "$f"); done
declare -A pids
lane() { # name command...: in the background, output to its log
  local name=$1; shift
  echo "==> $name (side by side; its output follows when every lane is done)"
  "$@" >"$results/$name.log" 2>&1 &
  pids[$name]=$!
}
run_vllm() { # one engine at a time: pytest's vLLM tests, then jest's
  local code=0
  run_pytest pytest-vllm "${VLLM_TESTS[@]}" || code=1
  run_jest jest-vllm "${VLLM_JEST[@]}" || code=1
  return $code
}
# every report the lanes must leave: a runner that crashed before writing its own counts as a failure
printf '%s\n' jest-demo.json jest.json pytest.xml pytest-vllm.xml jest-vllm.json >"$results/expected-reports"
# in band: the two pipeline tests after each other, so the lanes stay four processes on the cores
lane jest-demo run_jest jest-demo --runInBand "$DEMO_TEST" "$SWE_DEMO_TEST"
lane jest run_jest jest --testPathIgnorePatterns "$DEMO_TEST" "$SWE_DEMO_TEST" "${VLLM_JEST[@]}"
lane pytest run_pytest pytest "${ignore_vllm[@]}"
lane vllm run_vllm
for name in jest jest-demo pytest vllm; do
  wait "${pids[$name]}" || rc=1
  echo "==> $name"
  cat "$results/$name.log"
done
exit $rc
