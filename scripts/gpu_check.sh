#!/usr/bin/env bash
# One prepared device run (< 8 min): the GPU and TensorRT tests, then the GPU benchmarks.
#   scripts/gpu_check.sh [RESULTS_DIR]      (default: $OUT, else ./results)
# The device image has torch/onnx/onnxruntime/typer/rich but may lack nncf and TensorRT: the GPU tests
# do not need nncf, and TensorRT tests and figures are skipped (and say so) where it is not installed.
set -uo pipefail
if [ $# -ge 1 ]; then  # a relative DIR is the caller's, not the repository's
  mkdir -p "$1" && DEST="$(cd "$1" && pwd)" || exit 2
fi
cd "$(dirname "$0")/.."
DEST="${DEST:-${OUT:-results}}"
mkdir -p "$DEST"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" COMPRESS_PROGRESS=0 PYTHONUNBUFFERED=1
start=$(date +%s)
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm --format=csv > "$DEST/gpu_info.csv" 2>&1
python3 - <<'PY' | tee "$DEST/versions.txt"
import importlib
import torch, onnx, onnxruntime
print("torch", torch.__version__, "cuda", torch.version.cuda, "onnx", onnx.__version__, "onnxruntime", onnxruntime.__version__,
      "providers", onnxruntime.get_available_providers())
for name in ("tensorrt", "polygraphy"):
    try:
        print(name, importlib.import_module(name).__version__)
    except Exception as e:
        print(name, "not installed:", type(e).__name__)
PY
timeout 150 python3 -m pytest tests/gpu tests/tensorrt -q -rs -p no:cacheprovider -o addopts="" 2>&1 | tee "$DEST/gpu_tests.log"
tests_rc=${PIPESTATUS[0]}
timeout 90 python3 benchmarks/gpu_latency.py --out "$DEST/gpu_latency.json" > "$DEST/gpu_latency.log" 2>&1
latency_rc=$?
timeout 210 python3 benchmarks/gpu_backends.py --min-time 0.3 --out "$DEST/gpu_backends.json" > "$DEST/gpu_backends.log" 2>&1
backends_rc=$?
tail -3 "$DEST/gpu_latency.log"
grep -E "^(eager|cuda graph|compile|tensorrt)" "$DEST/gpu_backends.log" | tail -40
echo "gpu tests rc=$tests_rc, gpu_latency rc=$latency_rc, gpu_backends rc=$backends_rc, $(( $(date +%s) - start )) s"
exit $(( tests_rc != 0 || latency_rc != 0 || backends_rc != 0 ))
