#!/usr/bin/env bash
# The trainer's virtualenv (PyTorch from PyPI: a few minutes the first time), from trainer/requirements.txt,
# linked as .venv.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
exec bash "$root/infra/dev/setup-venv.sh" --link .venv trainer "$root/trainer/requirements.txt"
