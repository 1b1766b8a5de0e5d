#!/usr/bin/env bash
# Every benchmark of benchmarks/README.md, one after another in one sitting on this machine
# (run it on an otherwise idle machine: the figures are wall-clock ratios measured side by side).
#   bash benchmarks/run_all.sh [RESULTS]     # RESULTS: a finished demo's results/ for the disk line
# Prints each command before its output; copy the figures into benchmarks/README.md with the date.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
RESULTS=${1:-results}
echo "# $(date -u +%Y-%m-%dT%H:%MZ) on $(nproc) cores: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
run() { echo; echo "\$ $*"; /usr/bin/time -f "(wall %e s, peak RSS %M KiB)" "$@"; }
run $PY benchmarks/roi_vectors.py
run $PY benchmarks/session_masks.py
run $PY benchmarks/sobol_eval.py
run $PY benchmarks/train_throughput.py --epochs 3 --full-n 300
run $PY benchmarks/plan_paper.py
if [ -d "$RESULTS" ]; then run $PY benchmarks/disk_usage.py "$RESULTS" ${STACKS:+--stacks "$STACKS"}; fi
