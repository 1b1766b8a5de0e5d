#!/bin/bash
# Stop exactly what up.sh started, by PID, newest first (SIGTERM, then SIGKILL after 10 s).
ROOT=${SLURM_CI_DIR:-${TMPDIR:-/tmp}/robustmaps-slurm}
PIDDIR=$ROOT/pids
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
