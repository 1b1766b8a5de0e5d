#!/usr/bin/env bash
# The wheels the lent GPU machine lacks for benchmarks/gpu_check.sh, downloaded here into .whl/
# (ignored by git; carried to the machine with run(..., carry=[".whl"])). That machine has its
# own Python 3.12 and torch, no network, and pandas, scipy, numpy, PyYAML already
# (/work/.library/device/KINDS.md); robustmaps needs monai and nibabel besides (both pure Python,
# no dependency the machine lacks: nibabel's importlib-resources is for Python < 3.12). Versions
# from requirements.txt, so the machine runs the versions the workflow pins.
#     bash benchmarks/gpu_wheels.sh          # -> .whl/monai-*.whl .whl/nibabel-*.whl (about 3 MB)
set -euo pipefail
cd "$(dirname "$0")/.."
PIP=${PIP:-.venv/bin/pip}
pins=$(grep -i -E '^(monai|nibabel)==' requirements.txt | tr '\n' ' ')
[ -n "$pins" ] || { echo "no monai / nibabel pins in requirements.txt" >&2; exit 1; }
rm -rf .whl && mkdir -p .whl
# shellcheck disable=SC2086
"$PIP" download --quiet --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    -d .whl $pins
ls -l .whl
du -sh .whl
