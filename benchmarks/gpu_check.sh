#!/usr/bin/env bash
# The paper protocol's GPU check (issue 18, item 5): one prepared command for the lent GPU
# machine (/work/.library/device/README.md), with a CPU fallback (tiny sizes) elsewhere.
#
#   bash benchmarks/gpu_check.sh [OUT_DIR]       # OUT_DIR: $OUT on the device machine, else results/gpu_check
#
# Where CUDA is available: at 121 x 145 x 121 with config/paper.yaml's network, training with AMP
# through the workflow's loop vs a bare forward/backward loop (goal >= 0.9), a group mask,
# session masks, Grad-CAM, a check that every step ran on CUDA, and the cost model's unit costs
# (benchmarks/paper_cost.py --device cuda). Writes gpu_check.tsv / .json (+ paper_cost_cuda.json)
# under OUT_DIR. Details: benchmarks/gpu_check.py. Budget: under 8 minutes on an H200.
#
# On the lent machine (its own Python 3.12 and torch; no network): first, here,
#     bash benchmarks/gpu_wheels.sh          # monai + nibabel wheels into .whl/ (ignored, ~5 MB)
# then, from the session's checkout of this branch, the device tool's call:
#     run(command="bash benchmarks/gpu_check.sh", carry=[".whl"], timeout_s=540)
# Then, here, the paper's totals from the GPU's units (the run's files land under files_at):
#     .venv/bin/python benchmarks/paper_cost.py --units <files_at>/paper_cost_cuda.json
set -uo pipefail
cd "$(dirname "$0")/.."
out=${1:-${OUT:-results/gpu_check}}
mkdir -p "$out"
py=python3
[ -x .venv/bin/python ] && py=.venv/bin/python
if [ -d .whl ] && ls .whl/*.whl >/dev/null 2>&1 && ! "$py" -c "import monai, nibabel" 2>/dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
        || { echo "gpu_check: the carried wheels did not install" >&2; exit 1; }
    export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
timeout 480 "$py" benchmarks/gpu_check.py --out "$out" "${@:2}" 2>&1 | tee "$out/gpu_check.log"
rc=${PIPESTATUS[0]}
echo "gpu_check: exit $rc; table: $out/gpu_check.tsv"
exit "$rc"
