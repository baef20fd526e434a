#!/usr/bin/env bash
# Runs a command against a private local stack (its own ports and data folder under .data/), started
# before and stopped after, whatever the command's outcome. Used by `make test` and the benchmarks.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
export TRAINFLOW_STACK_DIR="${TRAINFLOW_STACK_DIR:-$root/.data/test-stack}"
export TRAINFLOW_TEMPORAL_PORT="${TRAINFLOW_TEMPORAL_PORT:-17233}"
export TRAINFLOW_TEMPORAL_UI_PORT="${TRAINFLOW_TEMPORAL_UI_PORT:-18233}"
export TRAINFLOW_MINIO_PORT="${TRAINFLOW_MINIO_PORT:-19000}"
export TRAINFLOW_MINIO_CONSOLE_PORT="${TRAINFLOW_MINIO_CONSOLE_PORT:-19001}"
export TEMPORAL_ADDRESS="127.0.0.1:$TRAINFLOW_TEMPORAL_PORT"
export TRAINFLOW_S3_ENDPOINT="http://127.0.0.1:$TRAINFLOW_MINIO_PORT"
export AWS_ACCESS_KEY_ID="${AWS_ACCESS_KEY_ID:-trainflow}"
export AWS_SECRET_ACCESS_KEY="${AWS_SECRET_ACCESS_KEY:-trainflow-secret}"
export AWS_REGION="${AWS_REGION:-us-east-1}"
export TRAINFLOW_BUCKET="${TRAINFLOW_BUCKET:-trainflow}"
export AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED=true

# A fresh stack each time: tests must not depend on what an earlier run left.
node bin/trainflow.js dev down >/dev/null 2>&1 || true
rm -rf "$TRAINFLOW_STACK_DIR"
stop() { node bin/trainflow.js dev down || true; }
trap stop EXIT
node bin/trainflow.js dev up --timeout 120
"$@"
