#!/usr/bin/env bash
# Bring up a single-node Slurm (munge, slurmctld, slurmd) for Capsule's Slurm tests and sweeps,
# reusing one that already answers. Installs the Debian packages when they are missing.
# No systemd here: the daemons are started by hand with pid files. The node is "localhost"
# at 127.0.0.1 (the machine's hostname need not resolve), and the scheduler runs without delay
# so array jobs start at once. No slurmdbd: Capsule notices a crashed task itself (a task that
# left the queue without a result), so accounting is not needed.
set -euo pipefail
missing=()
for cmd in slurmctld:slurmctld slurmd:slurmd sbatch:slurm-client munged:munge; do
    command -v "${cmd%%:*}" >/dev/null || missing+=("${cmd##*:}")
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "slurm-up: installing ${missing[*]}" >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
slurm_up() { timeout 5 sinfo -h -o %T 2>/dev/null | grep -qE '^(idle|mixed|allocated|completing)'; }
if slurm_up; then
    echo "slurm-up: Slurm already running" >&2
    exit 0
fi
cpus=$(nproc)
mkdir -p /etc/slurm /var/spool/slurmctld /var/spool/slurmd /var/log/slurm /run/munge
cat > /etc/slurm/slurm.conf <<CONF
# Written by Capsule's scripts/slurm-up.sh: one node, this machine.
ClusterName=capsule
SlurmctldHost=localhost(127.0.0.1)
SlurmUser=root
AuthType=auth/munge
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerParameters=batch_sched_delay=0,sched_min_interval=0
MpiDefault=none
ReturnToService=2
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
NodeName=localhost NodeAddr=127.0.0.1 CPUs=$cpus State=UNKNOWN
PartitionName=capsule Nodes=localhost Default=YES MaxTime=INFINITE State=UP
CONF
[ -f /etc/munge/munge.key ] || { mungekey --create 2>/dev/null || /usr/sbin/create-munge-key -f; }
chown -R munge:munge /etc/munge /run/munge /var/lib/munge /var/log/munge 2>/dev/null || true
if ! pgrep -x munged >/dev/null; then
    runuser -u munge -- munged
fi
pkill -x slurmctld 2>/dev/null || true
pkill -x slurmd 2>/dev/null || true
sleep 0.5
slurmctld
slurmd -N localhost
for _ in $(seq 30); do
    if slurm_up; then
        echo "slurm-up: Slurm ready ($cpus CPUs on node localhost)" >&2
        exit 0
    fi
    scontrol update NodeName=localhost State=RESUME >/dev/null 2>&1 || true
    sleep 1
done
echo "slurm-up: Slurm did not come up within 30 s; last log lines:" >&2
tail -n 10 /var/log/slurm/slurmctld.log /var/log/slurm/slurmd.log >&2 || true
exit 4
