#!/usr/bin/env bash
# The Kubernetes manifest validator of the tests: PyPI's kubernetes-validate (it ships the Kubernetes OpenAPI
# JSON schemas per version, so validation needs no network and no API server) in a small virtualenv of its own
# in the cache, pinned in infra/k8s/validator-requirements.txt. Prints the validator's python on stdout.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
req="$root/infra/k8s/validator-requirements.txt"
bash "$root/infra/dev/setup-venv.sh" kubernetes-validate "$req"  # progress on stderr
echo "$(bash "$root/infra/dev/setup-venv.sh" --path kubernetes-validate "$req")/bin/python"
