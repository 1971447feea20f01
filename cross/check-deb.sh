#!/usr/bin/env bash
# Checks the arm64 .deb built by cross/build.sh: architecture, contents (bundles, presets,
# sample images), conffile, unit, maintainer scripts (service user and groups), ONNX Runtime
# library (pinned sha256, aarch64) + licence and third-party notices.
set -euo pipefail
cd "$(dirname "$0")/.."
deb=$(ls -t target/aarch64-unknown-linux-gnu/debian/dermcam_*_arm64.deb | head -1)
fail() { echo "check-deb: $deb: $*" >&2; exit 1; }
[ "$(dpkg-deb --field "$deb" Architecture)" = arm64 ] || fail "architecture is not arm64"
contents=$(dpkg-deb --contents "$deb")
for f in ./usr/bin/dermcam ./etc/dermcam/config.toml \
    ./usr/share/dermcam/models/effl2-v2/model.onnx \
    ./usr/share/dermcam/models/effl2-v2/model.json \
    ./usr/share/dermcam/models/effl0-v2/model.onnx \
    ./usr/share/dermcam/boards/rpi4-st7789.toml ./usr/share/dermcam/boards/rpi5-hdmi.toml \
    ./usr/share/dermcam/boards/jetson-orin-nano-hdmi.toml \
    ./usr/share/dermcam/boards/qemu-virt.toml ./lib/udev/rules.d/60-dermcam.rules; do
    grep -q " $f\$" <<< "$contents" || fail "missing $f"
done
# `dermcam demo`'s default images: every sample of the source tree, and their attribution.
for f in tests/samples/*.jpg tests/samples/ATTRIBUTION.md; do
    g=./usr/share/dermcam/samples/$(basename "$f")
    grep -q " $g\$" <<< "$contents" || fail "missing $g"
done
grep -Eq " \./(usr/)?lib/systemd/system/dermcam\.service\$" <<< "$contents" || fail "missing systemd unit"
. cross/onnxruntime.env
for f in ./usr/lib/dermcam/libonnxruntime.so.$ORT_VERSION \
    ./usr/share/doc/dermcam/onnxruntime/LICENSE ./usr/share/doc/dermcam/onnxruntime/ThirdPartyNotices.txt; do
    grep -q " $f\$" <<< "$contents" || fail "missing $f (ONNX Runtime $ORT_VERSION, cross/onnxruntime.env)"
done
[ "$(grep -c ' \./usr/lib/dermcam/libonnxruntime' <<< "$contents")" = 1 ] || fail "more than one ONNX Runtime library"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
dpkg-deb --control "$deb" "$tmp/control"
grep -qx "/etc/dermcam/config.toml" "$tmp/control/conffiles" || fail "config.toml is not a conffile"
grep -q "adduser .*--system .*dermcam" "$tmp/control/postinst" || fail "postinst does not create the dermcam user"
for g in video spi gpio; do
    grep -q "$g" "$tmp/control/postinst" || fail "postinst does not add group $g"
done
grep -q "systemctl\|deb-systemd-helper" "$tmp/control/postinst" || fail "postinst does not enable the unit"
dpkg-deb --extract "$deb" "$tmp/root"
file "$tmp/root/usr/bin/dermcam" 2> /dev/null | grep -q "ARM aarch64" \
    || od -An -tx1 -j18 -N2 "$tmp/root/usr/bin/dermcam" | grep -q "b7 00" || fail "binary is not aarch64"
sh -n "$tmp/control/postinst" || fail "postinst has a syntax error"
# GPIO character devices and spidev are root-only without the rules: the button and the TFT
# would fail for the service user on a stock image.
grep -q 'SUBSYSTEM=="gpio".*GROUP="gpio"' "$tmp/root/lib/udev/rules.d/60-dermcam.rules" || fail "udev rules do not give gpiochips to group gpio"
ort=$tmp/root/usr/lib/dermcam/libonnxruntime.so.$ORT_VERSION
[ "$(sha256sum "$ort" | cut -d' ' -f1)" = "$ORT_LIB_SHA256" ] || fail "$ort sha256 differs from the pin"
od -An -tx1 -j18 -N2 "$ort" | grep -q "b7 00" || fail "ONNX Runtime library is not aarch64"
grep -q "MIT License" "$tmp/root/usr/share/doc/dermcam/onnxruntime/LICENSE" || fail "ONNX Runtime licence missing"
echo "check-deb: $deb OK ($(du -h "$deb" | cut -f1)): arm64, binary, bundles, presets, samples, conffile, unit, user, udev rules, ONNX Runtime $ORT_VERSION + licence"
