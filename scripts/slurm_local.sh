#!/usr/bin/env bash
# A one-node SLURM on this machine (munged, slurmctld, slurmd on localhost)
# for testing the scripts under scripts/slurm/. Needs root and Debian's
# packages: apt-get install -y slurm-wlm munge
#   scripts/slurm_local.sh start   # prints the SLURM_CONF to export
#   SLURM_CONF=/tmp/dreamer-slurm/slurm.conf sbatch ...
#   scripts/slurm_local.sh stop    # stops the daemons, drops the state
# State, logs and the config live in $SLURM_LOCAL_DIR (/tmp/dreamer-slurm),
# whose parent folders the munge user must be able to enter.
# No cgroups: processes are tracked by parent id (proctrack/linuxproc) and
# tasks are not bound (task/none), so it runs in containers too.
set -euo pipefail
dir="${SLURM_LOCAL_DIR:-/tmp/dreamer-slurm}"
conf="$dir/slurm.conf"
node="$(hostname -s)"
cpus="$(nproc)"

start() {
  for tool in munged slurmctld slurmd sbatch; do
    command -v "$tool" >/dev/null || {
      echo "$tool not found: apt-get install -y slurm-wlm munge" >&2; exit 1; }
  done
  if [ -e "$dir/slurmctld.pid" ]; then
    echo "Already started ($dir); run: $0 stop" >&2; exit 1
  fi
  mkdir -p "$dir/ctld" "$dir/spool" "$dir/munge"
  # munged runs as its own user: it must reach its folder.
  chmod 755 "$dir"
  chown munge:munge "$dir/munge"
  [ -e /etc/munge/munge.key ] || runuser -u munge -- mungekey --create
  runuser -u munge -- munged --socket="$dir/munge/munge.socket" \
    --pid-file="$dir/munge/munged.pid" --log-file="$dir/munge/munged.log" \
    --seed-file="$dir/munge/munged.seed"
  cat > "$conf" <<EOF
ClusterName=dreamer-local
SlurmctldHost=$node(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
# cred_expire also delays a requeued job's restart (default 120 s).
AuthInfo=socket=$dir/munge/munge.socket,cred_expire=10
CredType=cred/munge
StateSaveLocation=$dir/ctld
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd.pid
SlurmctldLogFile=$dir/slurmctld.log
SlurmdLogFile=$dir/slurmd.log
SlurmctldPort=6817
SlurmdPort=6818
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
MpiDefault=none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
JobRequeue=1
KillWait=30
MinJobAge=600
NodeName=$node NodeAddr=127.0.0.1 CPUs=$cpus State=UNKNOWN
PartitionName=local Nodes=$node Default=YES MaxTime=INFINITE State=UP
EOF
  slurmctld -f "$conf"
  slurmd -f "$conf"
  export SLURM_CONF="$conf"
  for _ in $(seq 60); do
    if sinfo -h -o %T 2>/dev/null | grep -qx idle; then
      echo "SLURM is up: export SLURM_CONF=$conf"
      return 0
    fi
    sleep 0.5
  done
  echo "SLURM did not come up; logs in $dir" >&2
  tail -n 20 "$dir"/slurmctld.log "$dir"/slurmd.log >&2 || true
  exit 1
}

stop() {
  if [ -e "$conf" ]; then  # Jobs outlive slurmd: cancel them first.
    SLURM_CONF="$conf" scancel --full --user="$(id -un)" 2>/dev/null || true
    for _ in $(seq 40); do
      [ -z "$(SLURM_CONF="$conf" squeue -h 2>/dev/null)" ] && break
      sleep 0.5
    done
  fi
  for pidfile in "$dir/slurmd.pid" "$dir/slurmctld.pid" "$dir/munge/munged.pid"; do
    [ -e "$pidfile" ] || continue
    pid="$(cat "$pidfile")"
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 40); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
    kill -9 "$pid" 2>/dev/null || true
  done
  rm -rf "$dir"
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  *) echo "usage: $0 start|stop" >&2; exit 2 ;;
esac
