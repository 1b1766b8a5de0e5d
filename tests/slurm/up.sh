#!/bin/bash
# A real one-node Slurm cluster on this Debian machine, for the workflow's Slurm test. Run as root.
# Installs slurm-wlm + munge (apt), writes slurm.conf / gres.conf for this host with two
# partitions on the same node, `cpu` and `gpu` (the names of profiles/slurm/partitions.yaml),
# and two fake GPUs (gres with File= device nodes: Slurm hands them out and sets
# CUDA_VISIBLE_DEVICES; there is no CUDA behind them), starts munged, slurmctld and slurmd and
# waits until the node is idle. No accounting (sacct fails: the profile's squeue status command
# is what is tested). Everything started is recorded by PID in $PIDDIR for down.sh.
# All of Slurm's state (controller state, slurmd spool, logs) lives in a fresh folder under
# $SLURM_CI_DIR and slurmctld starts clean (-c): jobs saved by an earlier cluster on this machine
# (/var/spool/slurm*) would otherwise be restored and keep the node allocated.
# Adapted from a measured recipe (Debian 12, Slurm 22.05, about 10 s once packages are installed).
set -euo pipefail
ROOT=${SLURM_CI_DIR:-${TMPDIR:-/tmp}/robustmaps-slurm}
PIDDIR=$ROOT/pids
LOGDIR=$ROOT/logs
STATEDIR=$ROOT/state
SPOOLDIR=$ROOT/spool
mkdir -p "$PIDDIR" "$LOGDIR"
rm -rf "$STATEDIR" "$SPOOLDIR"
mkdir -p "$STATEDIR" "$SPOOLDIR"
waitfor() { # waitfor <tries> <cmd...>   (0.5 s between tries)
  local n=$1; shift
  for _ in $(seq 1 "$n"); do "$@" >/dev/null 2>&1 && return 0; sleep 0.5; done
  echo "timeout waiting for: $*" >&2; return 1
}
started() { echo "$2" >"$PIDDIR/$1.pid"; }

if ! command -v slurmctld >/dev/null || ! command -v munged >/dev/null; then
  export DEBIAN_FRONTEND=noninteractive
  { apt-get update -q && apt-get install -y -q --no-install-recommends slurm-wlm munge; } >"$LOGDIR/apt.log" 2>&1 \
    || { echo "apt-get install slurm-wlm munge failed, see $LOGDIR/apt.log" >&2; exit 1; }
fi

# never take over (or later stop) a cluster that was already running here
if command -v scontrol >/dev/null && scontrol ping >/dev/null 2>&1; then
  echo "a Slurm controller already answers on this machine: stop it first" >&2; exit 1
fi

# munge
[ -s /etc/munge/munge.key ] || mungekey --create --keyfile=/etc/munge/munge.key
chown munge:munge /etc/munge/munge.key; chmod 400 /etc/munge/munge.key
install -d -o munge -g munge -m 755 /run/munge
install -d -o munge -g munge /var/log/munge /var/lib/munge
setpriv --reuid=munge --regid=munge --init-groups /usr/sbin/munged -F >"$LOGDIR/munged.out" 2>&1 &
started munged $!
waitfor 20 sh -c 'munge -n | unmunge'

# two fake GPU device nodes (character devices like /dev/null)
for i in 0 1; do [ -e "/dev/fakegpu$i" ] || mknod -m 666 "/dev/fakegpu$i" c 1 3; done

H=$(hostname -s)
NODELINE=$(slurmd -C | head -1)
MEM=$(echo "$NODELINE" | sed -n 's/.*RealMemory=\([0-9]*\).*/\1/p')
# The node declares at least 48 GB, as it declares two fake GPUs: the workflow profile sizes each
# rule's memory for the paper protocol (session masks 19 GB; profiles/default/config.yaml), and a
# request above the node's RealMemory is refused at submission. The smoke jobs use under 1 GB;
# config_overrides keeps slurmd from draining a node with less real memory than declared.
DECLARED=$((MEM * 90 / 100)); [ "$DECLARED" -ge 48000 ] || DECLARED=48000
NODELINE=$(echo "$NODELINE" | sed "s/RealMemory=[0-9]*/RealMemory=$DECLARED/")
mkdir -p /etc/slurm
cat >/etc/slurm/slurm.conf <<CONF
ClusterName=robustmaps
SlurmctldHost=$H
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
ReturnToService=2
SlurmctldPidFile=$ROOT/slurmctld.pid
SlurmdPidFile=$ROOT/slurmd.pid
SlurmctldPort=6817
SlurmdPort=6818
SlurmdSpoolDir=$SPOOLDIR
StateSaveLocation=$STATEDIR
SlurmctldLogFile=$LOGDIR/slurmctld.log
SlurmdLogFile=$LOGDIR/slurmd.log
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=1000
SlurmdParameters=config_overrides
GresTypes=gpu
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
MinJobAge=300
MailProg=/bin/true
InactiveLimit=0
KillWait=5
Waittime=0
$NODELINE Gres=gpu:2 State=UNKNOWN
PartitionName=cpu Nodes=$H Default=YES MaxTime=INFINITE State=UP
PartitionName=gpu Nodes=$H MaxTime=INFINITE State=UP
CONF
# a "gpu" GRES without File= is silently dropped by slurmd ("Removing file-less GPU")
echo "NodeName=$H Name=gpu File=/dev/fakegpu[0-1]" >/etc/slurm/gres.conf

slurmctld -D -c >"$LOGDIR/slurmctld.out" 2>&1 &
started slurmctld $!
waitfor 40 scontrol ping
# SLURMD_NICE: the jobs inherit slurmd's nice value (PropagatePrioProcess=0, the default); the
# test suite runs its Slurm run beside other tests with 10
nice -n "${SLURMD_NICE:-0}" slurmd -D >"$LOGDIR/slurmd.out" 2>&1 &
started slurmd $!
if ! waitfor 120 sh -c 'sinfo -h -o %t | grep -qx idle'; then
  { sinfo -N -l; scontrol show node; tail -n 30 "$LOGDIR/slurmctld.log" "$LOGDIR/slurmd.log" "$LOGDIR/slurmd.out"; } >&2 || true
  exit 1
fi
sinfo
