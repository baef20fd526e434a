#!/usr/bin/env bash
# Builds the local stack's two servers from the Go module proxy into a cache outside the checkout:
#   temporal (Temporal CLI, whose `server start-dev` is the dev server) and minio (S3).
# Idempotent: a binary already in the cache at the pinned version is kept. Prints what it does, since
# each build takes minutes on 2 cores.
set -euo pipefail

TEMPORAL_VERSION="v1.5.1"                         # later tags carry a replace directive go install refuses
# MinIO's RELEASE.* tags are not semver: the module proxy serves neither RELEASE.2025-10-15T17-29-55Z nor
# its commit (9e49d5e) here, so we pin the newest pseudo-version it does serve (the archived repo's last
# commit, 2026-02-12), which is a later build of the same server.
MINIO_VERSION="v0.0.0-20260212201848-7aac2a2c5b7c"
CACHE="${TRAINFLOW_CACHE:-$HOME/.cache/trainflow}"
BIN="$CACHE/bin"
mkdir -p "$BIN"

log() { printf '[install-tools] %s\n' "$*"; }

build() { # name module version
  local name=$1 module=$2 version=$3
  local stamp="$BIN/.$name.version"
  if [[ -x "$BIN/$name" && -f "$stamp" && "$(cat "$stamp")" == "$version" ]]; then
    log "$name $version already built: $BIN/$name"
    return 0
  fi
  command -v go >/dev/null || { echo "go is required to build $name (install Go 1.24+)" >&2; exit 1; }
  log "building $name $version from the Go module proxy (takes a few minutes on 2 cores)…"
  local start=$SECONDS tmp
  tmp=$(mktemp -d)
  # Build into a temporary GOBIN and move into place, so an interrupted build never leaves a half binary.
  if ! GOBIN="$tmp" GOFLAGS=-buildvcs=false go install -v "$module@$version" 2>&1 | sed -u "s/^/[install-tools] $name: /"; then
    log "$name: default toolchain failed; retrying with the module's toolchain (GOTOOLCHAIN=auto)"
    GOBIN="$tmp" GOTOOLCHAIN=auto GOFLAGS=-buildvcs=false go install -v "$module@$version" 2>&1 | sed -u "s/^/[install-tools] $name: /"
  fi
  mv "$tmp/$name" "$BIN/$name"
  rm -rf "$tmp"
  echo "$version" >"$stamp"
  log "$name built in $((SECONDS - start)) s: $BIN/$name"
}

build temporal github.com/temporalio/cli/cmd/temporal "$TEMPORAL_VERSION"
build minio github.com/minio/minio "$MINIO_VERSION"
