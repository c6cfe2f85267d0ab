#!/usr/bin/env bash
# Starts a one-node Slurm cluster on this machine for the job-launch tests and prints its slurm.conf path.
#   export SLURM_CONF=$(scripts/test-slurm.sh)
# Needs root. Installs Debian's slurmctld, slurmd, slurm-client and munge when missing. State, spool and
# logs live in one folder (CFTCLIP_SLURM_DIR, default /tmp/cftclip-slurm); accounting is off, processes
# are tracked without cgroups. Safe to run again: a cluster that already answers is reused.
set -euo pipefail
# Only the path goes to stdout, which callers capture; everything else goes to stderr.
dir=${CFTCLIP_SLURM_DIR:-/tmp/cftclip-slurm}
conf="$dir/slurm.conf"
if ! command -v slurmctld >/dev/null || ! command -v slurmd >/dev/null || ! command -v sbatch >/dev/null \
    || ! command -v munged >/dev/null; then
  apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq slurmctld slurmd slurm-client munge >&2
fi
export SLURM_CONF="$conf"
if [ -f "$conf" ] && scontrol ping 2>/dev/null | grep -q UP && sinfo -h -o %t 2>/dev/null | grep -qE '^(idle|mix|alloc)'; then
  echo "$conf"
  exit 0
fi

mkdir -p "$dir/state" "$dir/spool" "$dir/log"
install -d -o munge -g munge -m 0755 /run/munge
if ! munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
  [ -s /etc/munge/munge.key ] || runuser -u munge -- mungekey --create >&2
  runuser -u munge -- /usr/sbin/munged >&2
fi

node=$(hostname -s)
cpus=$(nproc)
memory=$(awk '/MemTotal/ {print int($2 / 1024 / 2)}' /proc/meminfo)  # half the machine, in MiB
cat >"$conf" <<EOF
# One-node test cluster written by scripts/test-slurm.sh
ClusterName=cftclip-test
SlurmctldHost=$node(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd.pid
SlurmctldLogFile=$dir/log/slurmctld.log
SlurmdLogFile=$dir/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
MpiDefault=none
ReturnToService=2
KillWait=10
MinJobAge=600
NodeName=$node NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$memory State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF

for pidfile in "$dir/slurmctld.pid" "$dir/slurmd.pid"; do  # a cluster left from an earlier run that no longer answers
  if [ -s "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null; then kill "$(cat "$pidfile")" || true; sleep 1; fi
done
slurmctld -f "$conf" >&2
slurmd -f "$conf" >&2
for _ in $(seq 60); do
  state=$(sinfo -h -o %t 2>/dev/null | head -1 || true)
  case "$state" in
    idle|mix|alloc) echo "$conf"; exit 0 ;;
    down*|drain*) scontrol update NodeName="$node" State=RESUME >&2 2>/dev/null || true ;;
  esac
  sleep 1
done
echo "Slurm did not come up; see $dir/log/slurmctld.log and $dir/log/slurmd.log" >&2
exit 1
