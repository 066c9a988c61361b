#!/usr/bin/env bash
# A real one-node SLURM cluster on this machine, for the `slurm` tests (recipe: Debian slurm-wlm 22.05).
#
#   tests/cluster/slurm.sh start    # install slurm-wlm + munge if missing (root + apt), start the daemons
#   tests/cluster/slurm.sh stop     # stop what `start` started (nothing, if the cluster was already up)
#   tests/cluster/slurm.sh status   # exit 0 when a cluster answers
#
# `start` exits 0 when a cluster answers (already running, or started now), and 77 when one cannot be
# had here (not root, no apt-get, or a foreign /etc/slurm/slurm.conf): the tests then skip with its
# reason, printed on stderr. It only ever stops daemons it started itself (a state file says which).
set -euo pipefail

STATE=${CONVBENCH_SLURM_STATE:-/run/convbench-slurm.state}
CONF=/etc/slurm/slurm.conf
MARK="# written by convbench tests/cluster/slurm.sh"

skip() { echo "slurm.sh: cannot start a SLURM cluster: $*" >&2; exit 77; }
answers() { command -v sinfo >/dev/null && timeout 10 scontrol ping 2>/dev/null | grep -q UP \
            && timeout 10 sinfo -h -o %a 2>/dev/null | grep -q up; }

start() {
    if answers; then echo "slurm.sh: a SLURM cluster already answers; using it"; return 0; fi
    [ "$(id -u)" = 0 ] || skip "not root (the daemons and /etc/slurm need root)"
    if ! command -v slurmctld >/dev/null || ! command -v munged >/dev/null; then
        command -v apt-get >/dev/null || skip "slurm-wlm is not installed and there is no apt-get"
        echo "slurm.sh: installing slurm-wlm and munge (apt-get)"
        apt-get update -qq >/dev/null
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq slurm-wlm munge >/dev/null
    fi
    if [ -e "$CONF" ] && ! grep -qF "$MARK" "$CONF"; then
        skip "$CONF exists and was not written by this script; not overwriting it"
    fi
    [ -f /etc/munge/munge.key ] || mungekey --create
    local host mem started=""
    host=$(hostname -s)
    # RealMemory above the real memory keeps slurmd from registering: take MemTotal less 1 GiB
    mem=$(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 - 1024 ))
    mkdir -p /var/spool/slurmctld /var/spool/slurmd /var/log/slurm /run/munge /etc/slurm
    chown munge:munge /run/munge
    cat > "$CONF" <<EOF
$MARK
ClusterName=local
SlurmctldHost=${host}
SlurmUser=root
AuthType=auth/munge
CryptoType=crypto/munge
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
ReturnToService=2
MinJobAge=600
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
NodeName=${host} CPUs=$(nproc) RealMemory=${mem} State=UNKNOWN
PartitionName=debug Nodes=${host} Default=YES MaxTime=INFINITE State=UP
EOF
    if ! pgrep -x munged >/dev/null; then runuser -u munge -- /usr/sbin/munged; started="munged "; fi
    /usr/sbin/slurmctld && /usr/sbin/slurmd
    echo "${started}slurmctld slurmd" > "$STATE"
    for _ in $(seq 30); do answers && break; sleep 0.5; done
    answers || skip "the daemons started but the cluster does not answer (see /var/log/slurm/)"
    # a node left DOWN/DRAIN by an earlier run: bring it back
    scontrol update nodename="$host" state=resume 2>/dev/null || true
    for _ in $(seq 20); do sinfo -h -o %t | grep -qE '^(idle|mix|alloc)' && break; sleep 0.5; done
    sinfo
}

stop() {
    [ -f "$STATE" ] || { echo "slurm.sh: this script started no cluster; leaving it alone"; return 0; }
    if grep -q slurmctld "$STATE"; then scontrol shutdown >/dev/null 2>&1 || true; fi
    if grep -q munged "$STATE" && [ -f /run/munge/munged.pid ]; then kill "$(cat /run/munge/munged.pid)" || true; fi
    for _ in $(seq 20); do pgrep -x slurmctld >/dev/null || pgrep -x slurmd >/dev/null || break; sleep 0.5; done
    rm -f "$STATE"
    echo "slurm.sh: stopped"
}

case "${1:-}" in
    start) start ;;
    stop) stop ;;
    status) answers ;;
    *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
