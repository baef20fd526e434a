#!/usr/bin/env bash
# Installs what the code sandbox (trainer/trainflow_trainer/sandbox/) needs: bubblewrap (`bwrap`), plus
# util-linux's `prlimit`/`unshare` (normally present) and a system python3 (programs run with it when the
# trainer's Python lives under a directory other users cannot reach, such as /root/.pyenv).
# Idempotent: installs only what is missing. Then checks that bwrap can actually build a sandbox here (it
# needs unprivileged user namespaces) and says which confinement the sandbox will use.
set -euo pipefail
log() { printf '[install-sandbox] %s\n' "$*"; }

missing=()
command -v bwrap >/dev/null || missing+=(bubblewrap)
command -v prlimit >/dev/null || missing+=(util-linux)
[[ -x /usr/bin/python3 ]] || missing+=(python3)
# SWE environments (tasks/swe): the tests' venvs are made with the system python3's venv module, and curation
# fetches a release's sdist with its pip, so a fresh machine needs both
/usr/bin/python3 -c 'import ensurepip' 2>/dev/null || missing+=(python3-venv)
/usr/bin/python3 -m pip --version >/dev/null 2>&1 || missing+=(python3-pip)
if ((${#missing[@]})); then
  if ! command -v apt-get >/dev/null; then
    log "missing ${missing[*]} and no apt-get: install them with your package manager"; exit 1
  fi
  SUDO=""; [[ $(id -u) -eq 0 ]] || SUDO="sudo"
  log "installing ${missing[*]} (apt-get)"
  $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null 2>&1 \
    || { $SUDO apt-get update -qq >/dev/null && $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null; }
else
  log "bubblewrap $(bwrap --version | awk '{print $2}'), prlimit and python3 (venv, pip) already installed"
fi

# The probe: the sandbox's own flags, as an unprivileged uid when we are root (as the sandbox runs them).
probe=(bwrap --unshare-all --unshare-user --die-with-parent --new-session --disable-userns
       --ro-bind /usr /usr --ro-bind-try /lib /lib --ro-bind-try /lib64 /lib64 --ro-bind-try /bin /bin
       --proc /proc --dev /dev --tmpfs /tmp -- /bin/true)
if [[ $(id -u) -eq 0 ]] && command -v setpriv >/dev/null; then
  probe=(setpriv --reuid 3999999 --regid 3999999 --clear-groups "${probe[@]}")
fi
if "${probe[@]}" 2>/dev/null; then
  log "sandbox confinement: bwrap (namespaces, read-only system, private work folder, rlimits)"
else
  log "bwrap cannot build a sandbox here (unprivileged user namespaces disabled?): the sandbox falls back to"
  log "unshare --net + rlimits + a Python audit hook; enable user namespaces (sysctl kernel.unprivileged_userns_clone=1) for bwrap"
fi
