#!/usr/bin/env bash
# The MLflow tracking server `trainflow dev up --mlflow` starts (and the tracking test runs): MLflow in a
# virtualenv of its own in the cache (its server dependencies stay out of the trainer's environment). The
# trainer talks to it with mlflow-skinny, pinned in trainer/requirements.txt. Idempotent.
set -euo pipefail
VERSION=3.17.2
CACHE="${TRAINFLOW_CACHE:-$HOME/.cache/trainflow}"
venv="$CACHE/venvs/mlflow-$VERSION"
log() { printf '[setup-mlflow] %s\n' "$*"; }
if [[ -f "$venv/.complete" ]]; then
  log "MLflow $VERSION up to date: $venv"
  exit 0
fi
log "installing MLflow $VERSION into $venv (a minute or two, once)"
rm -rf "$venv"
python3 -m venv "$venv"
"$venv/bin/pip" install --quiet --upgrade pip
"$venv/bin/pip" install --quiet "mlflow==$VERSION"
touch "$venv/.complete"
log "MLflow $("$venv/bin/mlflow" --version 2>/dev/null | awk '{print $NF}') installed"
