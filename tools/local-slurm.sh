#!/usr/bin/env bash
# Start (or check) a one-node SLURM cluster on this machine, for tests and demos of the
# `profiles/slurm` path. Needs root and Debian packages; no accounting database (the profile polls
# with squeue, so MinJobAge is kept large for finished jobs to stay visible).
#
#   tools/local-slurm.sh start    install slurm-wlm + munge if needed, write slurm.conf, start daemons
#   tools/local-slurm.sh stop     stop the daemons
#   tools/local-slurm.sh status   sinfo
#
# Partitions: `cpu` (default) and `gpu`, both on this node. The node has no GPU (no GRES: `sinfo -o %G`
# says "(null)"), so profiles/slurm's GPU requests are stripped to 0 by src/pipeline/cluster.py and the
# training jobs run on the `gpu` partition's CPUs. tests/test_slurm.py calls `start` itself.
set -euo pipefail

CONF_DIR=/etc/slurm
STATE=/var/spool/slurm
HOST=$(hostname -s)

install() {
    if ! command -v slurmctld >/dev/null || ! command -v munged >/dev/null; then
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq slurm-wlm munge >/dev/null
    fi
}

write_conf() {
    local cpus mem
    cpus=$(nproc)
    # The node offers at least 16 GB, whatever the machine has (config_overrides below): the
    # profile's memory requests (up to 8 GB for training) must be schedulable on a small CI
    # machine, while the tiny jobs really use well under 1 GB each.
    mem=$(( $(awk '/MemTotal/ {print int($2/1024)}' /proc/meminfo) - 2048 ))
    [ "$mem" -ge 16384 ] || mem=16384
    mkdir -p "$CONF_DIR" "$STATE/ctld" "$STATE/d" /var/log/slurm /run/slurm
    cat > "$CONF_DIR/slurm.conf.new" <<CONF
ClusterName=localcluster
SlurmctldHost=$HOST
SlurmUser=root
SlurmdUser=root
SlurmdParameters=config_overrides
AuthType=auth/munge
StateSaveLocation=$STATE/ctld
SlurmdSpoolDir=$STATE/d
SlurmctldPidFile=/run/slurm/slurmctld.pid
SlurmdPidFile=/run/slurm/slurmd.pid
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
ReturnToService=2
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
MpiDefault=none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
MinJobAge=86400
InactiveLimit=0
KillWait=10
Waittime=0
NodeName=$HOST CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=cpu Nodes=$HOST Default=YES MaxTime=INFINITE State=UP
PartitionName=gpu Nodes=$HOST Default=NO MaxTime=INFINITE State=UP
CONF
    if ! cmp -s "$CONF_DIR/slurm.conf.new" "$CONF_DIR/slurm.conf" 2>/dev/null; then
        mv "$CONF_DIR/slurm.conf.new" "$CONF_DIR/slurm.conf"
        CONF_CHANGED=1
    else
        rm -f "$CONF_DIR/slurm.conf.new"
    fi
    # SLURM 22.05's slurmd always loads a cgroup plugin; the v1 hierarchies are mounted here.
    printf 'CgroupPlugin=cgroup/v1\nCgroupAutomount=yes\nConstrainCores=no\nConstrainRAMSpace=no\n' > "$CONF_DIR/cgroup.conf"
}

start_munge() {
    if ! pgrep -x munged >/dev/null; then
        [ -s /etc/munge/munge.key ] || { dd if=/dev/urandom bs=1 count=1024 of=/etc/munge/munge.key 2>/dev/null; }
        chown munge:munge /etc/munge/munge.key 2>/dev/null || true
        chmod 400 /etc/munge/munge.key
        mkdir -p /run/munge && chown munge:munge /run/munge 2>/dev/null || true
        su -s /bin/sh munge -c "/usr/sbin/munged --force" 2>/dev/null || /usr/sbin/munged --force
    fi
}

start() {
    install
    CONF_CHANGED=0
    write_conf
    if [ "$CONF_CHANGED" = 1 ] && pgrep -x slurmctld >/dev/null; then
        stop  # daemons from an older slurm.conf: restart them with the new one
        sleep 2
    fi
    start_munge
    pgrep -x slurmctld >/dev/null || slurmctld -c
    pgrep -x slurmd >/dev/null || slurmd -c
    for _ in $(seq 60); do
        if sinfo -h -o "%T" 2>/dev/null | grep -qE "idle|mixed|alloc"; then
            sinfo
            return 0
        fi
        scontrol update nodename="$HOST" state=resume >/dev/null 2>&1 || true
        sleep 1
    done
    echo "local SLURM did not come up; see /var/log/slurm/" >&2
    tail -20 /var/log/slurm/slurmctld.log /var/log/slurm/slurmd.log >&2 || true
    return 1
}

stop() {
    pkill -x slurmd || true
    pkill -x slurmctld || true
}

case "${1:-start}" in
    start) start ;;
    stop) stop ;;
    status) sinfo ;;
    *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
