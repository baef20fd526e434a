#!/usr/bin/env bash
# Installs Debian's Chromium for the report's browser test (test/rl/report.test.ts drives it headless through
# puppeteer-core; nothing downloads a browser of its own). Idempotent: installs only when missing.
set -euo pipefail
log() { printf '[install-chromium] %s\n' "$*"; }
if command -v chromium >/dev/null; then
  log "$(chromium --version 2>/dev/null | head -1) already installed"
  exit 0
fi
if ! command -v apt-get >/dev/null; then
  log "chromium is missing and there is no apt-get: install Chromium with your package manager"; exit 1
fi
SUDO=""; [[ $(id -u) -eq 0 ]] || SUDO="sudo"
log "installing chromium (apt-get; a minute or two, once)"
$SUDO apt-get install -y -qq chromium >/dev/null 2>&1 \
  || { $SUDO apt-get update -qq >/dev/null && $SUDO apt-get install -y -qq chromium >/dev/null; }
log "$(chromium --version 2>/dev/null | head -1)"
