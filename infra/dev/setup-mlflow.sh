#!/usr/bin/env bash
# The MLflow tracking server `trainflow dev up --mlflow` starts (and the tracking test runs): MLflow in a
# virtualenv of its own (its server dependencies stay out of the trainer's environment), pinned in
# infra/dev/mlflow-requirements.txt. The trainer talks to it with mlflow-skinny, pinned in
# trainer/requirements.txt.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
exec bash "$root/infra/dev/setup-venv.sh" mlflow "$root/infra/dev/mlflow-requirements.txt"
