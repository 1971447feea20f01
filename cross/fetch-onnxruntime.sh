#!/usr/bin/env bash
# Downloads the pinned ONNX Runtime aarch64 wheel from PyPI (cross/onnxruntime.env), checks its
# sha256, and extracts what the arm64 .deb ships into target/onnxruntime-aarch64/:
#   libonnxruntime.so.<version>  (-> /usr/lib/dermcam/)
#   LICENSE, ThirdPartyNotices.txt (-> /usr/share/doc/dermcam/onnxruntime/)
# Idempotent: a verified copy is reused. Needs python3 with pip (CI: python3-pip).
set -euo pipefail
cd "$(dirname "$0")/.."
. cross/onnxruntime.env
OUT=target/onnxruntime-aarch64
LIB=$OUT/libonnxruntime.so.$ORT_VERSION
sha() { sha256sum "$1" | cut -d' ' -f1; }
if [ -f "$LIB" ] && [ "$(sha "$LIB")" = "$ORT_LIB_SHA256" ] && [ -f "$OUT/LICENSE" ] && [ -f "$OUT/ThirdPartyNotices.txt" ]; then
    echo "onnxruntime $ORT_VERSION aarch64: $LIB (cached, sha256 OK)"
    exit 0
fi
mkdir -p "$OUT/wheel"
wheel=$OUT/wheel/$ORT_WHEEL
if [ ! -f "$wheel" ] || [ "$(sha "$wheel")" != "$ORT_WHEEL_SHA256" ]; then
    rm -f "$wheel"
    py=$(ls target/toolchain-venv/bin/python 2> /dev/null || command -v python3)
    "$py" -m pip download --quiet "onnxruntime==$ORT_VERSION" --no-deps --only-binary=:all: \
        --platform manylinux_2_28_aarch64 --python-version 3.12 --implementation cp \
        -d "$OUT/wheel"
fi
[ -f "$wheel" ] || { echo "fetch-onnxruntime: $ORT_WHEEL was not downloaded" >&2; exit 1; }
got=$(sha "$wheel")
[ "$got" = "$ORT_WHEEL_SHA256" ] || { echo "fetch-onnxruntime: $wheel sha256 $got != pinned $ORT_WHEEL_SHA256" >&2; exit 1; }
python3 - "$wheel" "$OUT" "$ORT_VERSION" <<'PY'
import os, shutil, sys, zipfile
wheel, out, ver = sys.argv[1:]
with zipfile.ZipFile(wheel) as z:
    for src, dst in [(f"onnxruntime/capi/libonnxruntime.so.{ver}", f"libonnxruntime.so.{ver}"),
                     ("onnxruntime/LICENSE", "LICENSE"),
                     ("onnxruntime/ThirdPartyNotices.txt", "ThirdPartyNotices.txt")]:
        with z.open(src) as f, open(os.path.join(out, dst), "wb") as g:
            shutil.copyfileobj(f, g)
PY
got=$(sha "$LIB")
[ "$got" = "$ORT_LIB_SHA256" ] || { echo "fetch-onnxruntime: $LIB sha256 $got != pinned $ORT_LIB_SHA256" >&2; exit 1; }
chmod 644 "$LIB" "$OUT/LICENSE" "$OUT/ThirdPartyNotices.txt"
echo "onnxruntime $ORT_VERSION aarch64: $LIB (sha256 OK)"
