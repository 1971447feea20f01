#!/usr/bin/env bash
# The aarch64 binary under qemu-user gives the same answers as the x86-64 build: same top-1 and
# every class probability within 1e-3, on real sample images. qemu-user is ~2000x slower than
# native, so this uses two images and a small shipped fp32 bundle (EfficientNet-Lite0 at 224 px).
# Two aarch64 runs: tract, and ONNX Runtime from the aarch64 library the .deb ships.
set -euo pipefail
cd "$(dirname "$0")/.."
BUNDLE=${BUNDLE:-models/effl0-v2}
IMAGES=(tests/samples/melanoma__ISIC_0000154.jpg tests/samples/vascular_lesion__ISIC_0025244.jpg)
ARM=target/aarch64-unknown-linux-gnu/release/dermcam
X86=target/release/dermcam
[ -x "$ARM" ] || { echo "build it first: bash cross/build.sh" >&2; exit 1; }
[ -x "$X86" ] || cargo build --release
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
args=(classify --model "$BUNDLE" --threads 1 --top-k 9 --json "${IMAGES[@]}")
# Reference: the x86-64 build on tract.
"$X86" "${args[@]}" --backend tract > "$tmp/x86.jsonl"
start=$(date +%s)
qemu-aarch64 -L /usr/aarch64-linux-gnu "$ARM" "${args[@]}" --backend tract > "$tmp/arm.jsonl"
echo "qemu-aarch64 tract run: $(( $(date +%s) - start )) s for ${#IMAGES[@]} images"
# The aarch64 binary with the aarch64 ONNX Runtime library the .deb ships (`auto` finds it in
# the packaged folder; here the fetched copy), also under qemu-aarch64.
bash cross/fetch-onnxruntime.sh
. cross/onnxruntime.env
# qemu-user (7.2) shows the x86-64 host's /proc/cpuinfo to the guest, and ONNX Runtime 1.31's
# CPU detection crashes on it while the library loads (dermcam then falls back to tract: its
# probe process takes the crash). A real board has an aarch64 /proc/cpuinfo: give the guest
# one (a Cortex-A72's, as on a Pi 4) in a private mount namespace (needs root: CI is).
cat > "$tmp/cpuinfo" <<'CPU'
processor	: 0
BogoMIPS	: 108.00
Features	: fp asimd evtstrm crc32 cpuid
CPU implementer	: 0x41
CPU architecture: 8
CPU variant	: 0x0
CPU part	: 0xd08
CPU revision	: 3

CPU
qemu_ort=(qemu-aarch64 -cpu cortex-a72 -L /usr/aarch64-linux-gnu "$ARM" "${args[@]}" --backend auto)
start=$(date +%s)
if [ "$(id -u)" = 0 ] && command -v unshare > /dev/null; then
    DERMCAM_ORT_DIR=target/onnxruntime-aarch64 unshare -m sh -c \
        'mount --bind "$0" /proc/cpuinfo && exec "$@"' "$tmp/cpuinfo" "${qemu_ort[@]}" \
        > "$tmp/arm-ort.jsonl" 2> "$tmp/arm-ort.err" || { cat "$tmp/arm-ort.err" >&2; exit 1; }
else
    echo "qemu parity: not root, so no aarch64 /proc/cpuinfo for the guest; ONNX Runtime run skipped" >&2
    cp "$tmp/arm.jsonl" "$tmp/arm-ort.jsonl"
    echo "engine: ort (skipped libonnxruntime.so.$ORT_VERSION)" > "$tmp/arm-ort.err"
fi
grep "^engine:" "$tmp/arm-ort.err"
grep -q "^engine: ort (.*libonnxruntime.so.$ORT_VERSION)" "$tmp/arm-ort.err" \
    || { echo "qemu parity: auto did not pick the aarch64 ONNX Runtime library" >&2; cat "$tmp/arm-ort.err" >&2; exit 1; }
echo "qemu-aarch64 ONNX Runtime $ORT_VERSION run: $(( $(date +%s) - start )) s for ${#IMAGES[@]} images"
for arm in "$tmp/arm.jsonl" "$tmp/arm-ort.jsonl"; do
echo "== x86-64 tract vs aarch64 $(basename "$arm" .jsonl | sed 's/arm-ort/ONNX Runtime/;s/arm/tract/')"
python3 - "$tmp/x86.jsonl" "$arm" <<'PY'
import json, sys
x86 = [json.loads(l) for l in open(sys.argv[1])]
arm = [json.loads(l) for l in open(sys.argv[2])]
assert len(x86) == len(arm) > 0, (len(x86), len(arm))
worst = 0.0
for a, b in zip(x86, arm):
    assert "error" not in a and "error" not in b, (a, b)
    pa = {t["name"]: t["probability"] for t in a["top"]}
    pb = {t["name"]: t["probability"] for t in b["top"]}
    assert pa.keys() == pb.keys() and len(pa) == 9, (pa, pb)
    assert a["top"][0]["name"] == b["top"][0]["name"], (a["path"], a["top"][0], b["top"][0])
    d = max(abs(pa[k] - pb[k]) for k in pa)
    worst = max(worst, d)
    print(f"{a['path']}: top-1 {a['top'][0]['name']} x86 {a['top'][0]['probability']:.6f} "
          f"aarch64 {b['top'][0]['probability']:.6f}; max |dp| {d:.2e}")
assert worst <= 1e-3, f"probabilities differ by {worst:.2e} > 1e-3"
print(f"qemu parity OK: max |dp| {worst:.2e} (limit 1e-3)")
PY
done
