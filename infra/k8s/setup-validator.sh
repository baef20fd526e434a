#!/usr/bin/env bash
# The Kubernetes manifest validator of the tests: PyPI's kubernetes-validate (it ships the Kubernetes OpenAPI
# JSON schemas per version, so validation needs no network and no API server) in a small virtualenv of its own
# in the cache, kept apart from the trainer's environment. Idempotent; prints the validator's python on stdout.
set -euo pipefail
CACHE="${TRAINFLOW_CACHE:-$HOME/.cache/trainflow}"
version=1.31.0
venv="$CACHE/venvs/kubernetes-validate-$version"
if [[ ! -f "$venv/.complete" ]]; then
  echo "[setup-validator] creating $venv (kubernetes-validate==$version)" >&2
  rm -rf "$venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --progress-bar off "kubernetes-validate==$version" >&2
  touch "$venv/.complete"
fi
echo "$venv/bin/python"
