#!/usr/bin/env bash
# Stops the test cluster that start-test-cluster.sh started in $TRAINFLOW_SLURM_DIR (default /tmp/trainflow-slurm):
# first its jobs (so no job step outlives slurmd), then slurmd, slurmctld and munged, each by the pid in its pid
# file and only if that process still runs the command we started. Nothing else is touched; the folder (logs,
# configuration) stays for inspection. Idempotent.
set -uo pipefail
dir="${TRAINFLOW_SLURM_DIR:-/tmp/trainflow-slurm}"
export SLURM_CONF="$dir/slurm.conf"
say() { echo "slurm-test-cluster: $*"; }

ours() { # ours NAME: pid of the daemon NAME we started, if it is still that daemon
  local pid
  pid=$(cat "$dir/run/$1.pid" 2>/dev/null) || return 1
  [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null || return 1
  tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q "$1" || return 1
  echo "$pid"
}

stop() { # stop NAME: TERM, wait up to 10 s, then KILL
  local pid
  pid=$(ours "$1") || { say "$1 not running"; return 0; }
  say "stopping $1 (pid $pid)"
  kill -TERM "$pid" 2>/dev/null
  for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -0 "$pid" 2>/dev/null && { say "$1 ignored SIGTERM; killing"; kill -KILL "$pid" 2>/dev/null; }
  rm -f "$dir/run/$1.pid"
}

if ours slurmctld >/dev/null; then
  jobs=$(squeue -h -o %i 2>/dev/null | tr '\n' ' ')
  if [[ -n "${jobs// /}" ]]; then
    say "cancelling jobs: $jobs"
    scancel $jobs 2>/dev/null
    for _ in $(seq 150); do [[ -z "$(squeue -h -o %i 2>/dev/null)" ]] && break; sleep 0.2; done
  fi
fi
stop slurmd
stop slurmctld
stop munged
say "stopped"
