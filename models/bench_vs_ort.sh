#!/usr/bin/env bash
# tract vs ONNX Runtime on the same bundles, same machine, one process run: `dermcam bench
# --backend tract,ort,auto` at 1 thread and all threads (p50 of ITER inferences, the x best
# column = p50 / the fastest engine's p50 on that bundle and thread count). Then, for the int8
# bundles, tract running the QDQ graph as exported (DERMCAM_TRACT_QDQ=keep) beside the default
# rewrite, and each int8 bundle against its fp32 parent under tract.
# Usage: models/bench_vs_ort.sh [bundle...]   (default: every bundle in models/)
# ONNX Runtime: $ORT_DYLIB_PATH, else the toolchain venv's wheel (models/requirements.txt).
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-target/release/dermcam}
ITER=${ITER:-30}
THREADS=${THREADS:-1,0}
BUNDLES=("$@")
if [ ${#BUNDLES[@]} -eq 0 ]; then
    for d in models/*/; do if [ -f "$d/model.json" ]; then BUNDLES+=("${d%/}"); fi; done
fi
if [ -z "${ORT_DYLIB_PATH:-}" ]; then
    ORT_DYLIB_PATH=$(ls target/toolchain-venv/lib/python3*/site-packages/onnxruntime/capi/libonnxruntime.so.* 2> /dev/null | head -1 || true)
fi
[ -n "$ORT_DYLIB_PATH" ] || { echo "set ORT_DYLIB_PATH to a libonnxruntime.so (e.g. from the PyPI onnxruntime wheel)" >&2; exit 1; }
export ORT_DYLIB_PATH
ARGS=(); for b in "${BUNDLES[@]}"; do ARGS+=(--model "$b"); done
echo "# $(date -u +%FT%TZ) $(uname -m), $(nproc) CPUs: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')"
echo "# ONNX Runtime: $ORT_DYLIB_PATH"
"$BIN" bench "${ARGS[@]}" --backend tract,ort,auto --threads "$THREADS" --iterations "$ITER" 2> /dev/null
INT8=(); for b in "${BUNDLES[@]}"; do if grep -q '"precision": *"int8"' "$b/model.json"; then INT8+=(--model "$b"); fi; done
if [ ${#INT8[@]} -gt 0 ]; then
    echo "# tract running the int8 QDQ graphs as exported (DERMCAM_TRACT_QDQ=keep), for comparison"
    DERMCAM_TRACT_QDQ=keep "$BIN" bench "${INT8[@]}" --backend tract --threads "$THREADS" --iterations "$ITER" 2> /dev/null | grep -v "^machine\|^peak"
fi
