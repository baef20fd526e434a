#!/usr/bin/env bash
# Starts a single-node Slurm cluster on this machine for the Slurm launcher's integration tests:
#   - installs Debian's slurm-wlm and munge when missing (apt-get; needs root);
#   - writes its configuration under $TRAINFLOW_SLURM_DIR (default /tmp/trainflow-slurm) from
#     infra/slurm/slurm.conf.template: node = this host, fake GPUs (device nodes nothing binds to), no cgroups;
#   - starts its own munged (own key and socket, so a system munge is left alone), slurmctld and slurmd;
#   - waits until `sinfo` shows the node idle.
# Idempotent: if the cluster of this folder is already up and answering, it says so and exits 0.
# Clients find the cluster through SLURM_CONF: `export SLURM_CONF=$TRAINFLOW_SLURM_DIR/slurm.conf` (printed last).
# Stop it with infra/slurm/stop-test-cluster.sh (same TRAINFLOW_SLURM_DIR), which stops exactly what this started.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
dir="${TRAINFLOW_SLURM_DIR:-/tmp/trainflow-slurm}"
ctld_port="${TRAINFLOW_SLURMCTLD_PORT:-16817}"
slurmd_port="${TRAINFLOW_SLURMD_PORT:-16818}"
fake_gpus="${TRAINFLOW_SLURM_FAKE_GPUS:-8}"
say() { echo "slurm-test-cluster: $*"; }
die() { echo "slurm-test-cluster: error: $*" >&2; exit 1; }

export SLURM_CONF="$dir/slurm.conf"
# One start at a time (a test file and a test runner may both try): the second waits, then finds it up.
mkdir -p "$(dirname "$dir")"
exec 9>"$dir.lock"
flock 9  # (closed for the daemons below: they must not hold it)

alive() { # alive NAME: the daemon whose pid file is $dir/run/NAME.pid is running
  local pid
  pid=$(cat "$dir/run/$1.pid" 2>/dev/null) || return 1
  [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null
}

# ---- packages ---------------------------------------------------------------------------------------------
missing=()
for bin in slurmctld slurmd sbatch squeue scontrol munged; do
  command -v "$bin" >/dev/null 2>&1 || missing+=("$bin")
done
if ((${#missing[@]})); then
  [[ $(id -u) == 0 ]] || die "missing ${missing[*]}; run as root to install slurm-wlm and munge, or install them yourself"
  say "installing slurm-wlm and munge (missing: ${missing[*]})"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update
  apt-get install -y slurm-wlm munge
else
  say "slurm-wlm and munge are installed ($(slurmctld -V))"
fi

# ---- already up? ------------------------------------------------------------------------------------------
if alive munged && alive slurmctld && alive slurmd && sinfo -h -o '%T' 2>/dev/null | grep -Eq '^(idle|mixed|allocated)'; then
  say "already running in $dir"
  echo "export SLURM_CONF=$SLURM_CONF"
  exit 0
fi
# Half-started leftovers of an earlier run (e.g. killed mid-start): stop them first.
if alive munged || alive slurmctld || alive slurmd; then
  say "found a partly running cluster in $dir; stopping it first"
  TRAINFLOW_SLURM_DIR="$dir" bash "$here/stop-test-cluster.sh"
fi

# ---- configuration ----------------------------------------------------------------------------------------
say "writing configuration to $dir"
mkdir -p "$dir"/{run,log,spool/ctld,spool/d,munge}
chmod 755 "$dir"
chmod 700 "$dir/munge"
if [[ ! -s "$dir/munge/munge.key" ]]; then
  # A fresh key for this cluster only (1 KiB of random bytes, what mungekey writes).
  head -c 1024 /dev/urandom > "$dir/munge/munge.key"
fi
chmod 400 "$dir/munge/munge.key"

node=$(hostname -s)
cpus=$(nproc)
# Declared CPUs: at least 8 so several small test jobs can run side by side on a 2-core machine
# (SlurmdParameters=config_overrides lets the declared node differ from the hardware).
declared_cpus=$((cpus < 8 ? 8 : cpus))
mem_mb=$(awk '/MemTotal/ {print int($2/1024)}' /proc/meminfo)
user=$(id -un)
sed -e "s|@DIR@|$dir|g" -e "s|@NODE@|$node|g" -e "s|@CPUS@|$declared_cpus|g" -e "s|@MEMORY_MB@|$mem_mb|g" \
    -e "s|@USER@|$user|g" -e "s|@CTLD_PORT@|$ctld_port|g" -e "s|@SLURMD_PORT@|$slurmd_port|g" \
    -e "s|@GPUS@|$fake_gpus|g" "$here/slurm.conf.template" > "$dir/slurm.conf"
# Fake GPUs, so --gres=gpu:N is scheduled as on a GPU cluster: slurmd drops GPUs without device files, so each
# is a character device with /dev/null's numbers (nothing binds to them: no cgroup device constraint here).
# Where mknod is not allowed, plain files (slurmd logs a complaint per file and still counts them).
mkdir -p "$dir/dev"
for ((i = 0; i < fake_gpus; i++)); do
  [[ -e "$dir/dev/fakegpu$i" ]] || mknod "$dir/dev/fakegpu$i" c 1 3 2>/dev/null || touch "$dir/dev/fakegpu$i"
done
printf 'NodeName=%s Name=gpu File=%s/dev/fakegpu[0-%s]\n' "$node" "$dir" "$((fake_gpus - 1))" > "$dir/gres.conf"
# No cgroup.conf: slurmd 22.05 has no "disabled" cgroup plugin and probes the v1 mounts, which is harmless;
# the processes of jobs are tracked through /proc (ProctrackType=proctrack/linuxproc).
rm -f "$dir/cgroup.conf"
say "node $node: $declared_cpus CPUs declared ($cpus real), ${mem_mb} MB, $fake_gpus fake GPUs; ports $ctld_port/$slurmd_port"

# ---- daemons ----------------------------------------------------------------------------------------------
say "starting munged"
munged 9>&- --socket="$dir/munge/munge.socket" --key-file="$dir/munge/munge.key" --pid-file="$dir/run/munged.pid" \
  --log-file="$dir/log/munged.log" --seed-file="$dir/munge/munged.seed" --force
for _ in $(seq 50); do [[ -S "$dir/munge/munge.socket" ]] && break; sleep 0.1; done
[[ -S "$dir/munge/munge.socket" ]] || die "munged did not create its socket; see $dir/log/munged.log"
munge --socket="$dir/munge/munge.socket" -n </dev/null | unmunge --socket="$dir/munge/munge.socket" >/dev/null \
  || die "munge round trip failed; see $dir/log/munged.log"

say "starting slurmctld"
# -i: ignore state files of an earlier run (no stale jobs); -f: our config.
slurmctld -i -f "$dir/slurm.conf" 9>&- || die "slurmctld did not start; see $dir/log/slurmctld.log"
for _ in $(seq 100); do scontrol ping 2>/dev/null | grep -q UP && break; sleep 0.2; done
scontrol ping | grep -q UP || die "slurmctld does not answer; see $dir/log/slurmctld.log"

say "starting slurmd"
slurmd -f "$dir/slurm.conf" 9>&- || die "slurmd did not start; see $dir/log/slurmd.log"

say "waiting for node $node to be idle"
state=""
for _ in $(seq 150); do
  state=$(sinfo -h -n "$node" -o '%T' 2>/dev/null | head -1)
  [[ "$state" == idle ]] && break
  # A node that was down in an earlier run's state comes back by hand.
  [[ "$state" == down* || "$state" == drain* ]] && scontrol update NodeName="$node" State=RESUME 2>/dev/null || true
  sleep 0.2
done
[[ "$state" == idle ]] || die "node $node is '$state', not idle, after 30 s; see $dir/log/slurmd.log and $dir/log/slurmctld.log"
sinfo
say "up"
echo "export SLURM_CONF=$SLURM_CONF"
