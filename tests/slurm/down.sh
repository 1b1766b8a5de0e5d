#!/bin/bash
# Stop what up.sh started. First cancel every job still in the queue (only the cluster up.sh
# started answers here: up.sh refuses to start beside another one) and wait until their
# slurmstepd processes are gone, then stop the daemons by their recorded PIDs, newest first
# (SIGTERM, then SIGKILL after 10 s).
ROOT=${SLURM_CI_DIR:-${TMPDIR:-/tmp}/robustmaps-slurm}
PIDDIR=$ROOT/pids
if [ -f "$PIDDIR/slurmctld.pid" ] && scontrol ping >/dev/null 2>&1; then
  jobs=$(squeue -h -o %i 2>/dev/null)
  if [ -n "$jobs" ]; then
    echo "cancelling jobs still queued: $(echo $jobs)"
    scancel $jobs 2>/dev/null
    for _ in $(seq 1 60); do [ -z "$(squeue -h -o %i 2>/dev/null)" ] && break; sleep 0.5; done
  fi
fi
for d in slurmd slurmctld munged; do
  f="$PIDDIR/$d.pid"; [ -f "$f" ] || continue
  p=$(cat "$f")
  if kill "$p" 2>/dev/null; then
    for _ in $(seq 1 40); do kill -0 "$p" 2>/dev/null || break; sleep 0.25; done
    kill -0 "$p" 2>/dev/null && { echo "$d ($p) still alive: SIGKILL"; kill -9 "$p"; }
    echo "stopped $d ($p)"
  fi
  rm -f "$f"
done
