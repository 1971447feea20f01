#!/usr/bin/env bash
# Runs every fuzz target for SECONDS each (default 600) with cargo-fuzz / libFuzzer + ASan,
# seeded from the project's real inputs, and prints one summary line per target (executions,
# crashes). Usage: bash fuzz/run.sh [SECONDS] [target ...]
# Needs cargo-fuzz (cargo install cargo-fuzz) and a nightly compiler, or RUSTC_BOOTSTRAP=1 to
# let the stable compiler accept the sanitizer flags (what this script does).
set -euo pipefail
cd "$(dirname "$0")"
SECONDS_EACH=${1:-600}
shift || true
TARGETS=("$@")
[ ${#TARGETS[@]} -gt 0 ] || TARGETS=(image_decode upload_body config_toml manifest_json camera_frames)
export RUSTC_BOOTSTRAP=1

# Seeds: small real images (JPEG, PNG, progressive, EXIF-rotated), the board presets and
# example configs, the shipped manifests, camera frames.
seed() { mkdir -p "corpus/$1"; }
for t in image_decode upload_body camera_frames config_toml manifest_json; do seed "$t"; done
/usr/bin/python3 - <<'PY'  # Debian python3-pil
import glob, io, os
from PIL import Image
samples = sorted(glob.glob("../tests/samples/*.jpg"))
for i, s in enumerate(samples[:4]):
    im = Image.open(s).convert("RGB").resize((48, 36))
    for fmt, kw in [("JPEG", {}), ("PNG", {}), ("JPEG", {"progressive": True})]:
        b = io.BytesIO(); im.save(b, fmt, **kw); data = b.getvalue()
        name = f"{i}-{fmt.lower()}{'-prog' if kw else ''}"
        open(f"corpus/image_decode/{name}", "wb").write(data)
        for mode in (0, 1):
            body = data if mode == 0 else (b"--XdermcamX\r\nContent-Disposition: form-data; name=\"image\"; filename=\"a.jpg\"\r\nContent-Type: image/jpeg\r\n\r\n" + data + b"\r\n--XdermcamX--\r\n")
            # Mode byte: route (mode % 3); 0xFF also runs the model (see the target).
            open(f"corpus/upload_body/{name}-{mode}", "wb").write(bytes([mode]) + body)
    w, h = 16, 8
    yuyv = bytes((x * 7 + y) % 256 for y in range(h) for x in range(w * 2))
    open(f"corpus/camera_frames/yuyv-{i}", "wb").write(w.to_bytes(2, "little") + h.to_bytes(2, "little") + b"\0" + yuyv)
    b = io.BytesIO(); im.save(b, "JPEG")
    open(f"corpus/camera_frames/mjpeg-{i}", "wb").write(w.to_bytes(2, "little") + h.to_bytes(2, "little") + b"\1" + b.getvalue())
PY
cp ../boards/*.toml ../systemd/config.toml corpus/config_toml/
cp ../models/*/model.json corpus/manifest_json/ 2> /dev/null || true
for f in ../models/*/model.json; do cp "$f" "corpus/manifest_json/$(basename "$(dirname "$f")").json"; done

cargo fuzz build --release
mkdir -p logs
for t in "${TARGETS[@]}"; do
    # -malloc_limit_mb: any single allocation above 64 MB is a failure (the targets use a
    # 4-megapixel limit: 4M x 8 bytes = 32 MB is the largest legitimate buffer).
    set +e
    cargo fuzz run --release "$t" "corpus/$t" -- -max_total_time="$SECONDS_EACH" \
        -malloc_limit_mb=64 -rss_limit_mb=2048 -max_len=262144 -print_final_stats=1 \
        > "logs/$t.log" 2>&1
    rc=$?
    set -e
    execs=$(grep -o "stat::number_of_executed_units: *[0-9]*" "logs/$t.log" | grep -o "[0-9]*$" || echo "?")
    crashes=$(ls "artifacts/$t" 2> /dev/null | wc -l)
    echo "$t: ${SECONDS_EACH}s, $execs executions, exit $rc, $crashes crash artifacts"
done
