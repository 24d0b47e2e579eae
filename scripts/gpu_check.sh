#!/usr/bin/env bash
# One prepared device run: the GPU tests and the GPU benchmark; results under $OUT (or ./results).
# The device image has torch/onnx/onnxruntime/typer/rich but no nncf: the GPU tests do not need it.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-results}"
mkdir -p "$OUT"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" COMPRESS_PROGRESS=0 PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv > "$OUT/gpu_info.csv" 2>&1
python3 -c "import torch, onnx, onnxruntime; print(torch.__version__, torch.version.cuda, onnx.__version__, onnxruntime.__version__)" | tee "$OUT/versions.txt"
timeout 240 python3 -m pytest tests/gpu -q -p no:cacheprovider -o addopts="" 2>&1 | tee "$OUT/gpu_tests.log"
tests_rc=${PIPESTATUS[0]}
timeout 240 python3 benchmarks/gpu_latency.py --out "$OUT/gpu_latency.json" > "$OUT/gpu_latency.log" 2>&1
bench_rc=$?
tail -5 "$OUT/gpu_latency.log"
echo "gpu tests rc=$tests_rc, gpu benchmark rc=$bench_rc"
exit $(( tests_rc != 0 || bench_rc != 0 ))
