#!/usr/bin/env bash
# The whole test suite on a CUDA machine: every training path then runs on the GPU (device "auto").
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-results}"
mkdir -p "$OUT"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" COMPRESS_PROGRESS=0 PYTHONUNBUFFERED=1
timeout 420 python3 -m pytest tests -q -p no:cacheprovider -o addopts="-ra" --strict-markers 2>&1 | tee "$OUT/gpu_suite.log"
