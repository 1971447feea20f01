#!/usr/bin/env bash
# One command: the aarch64 appliance binary (Raspberry Pi / Jetson) and its arm64 .deb, built on
# an x86-64 Debian host.
#   bash cross/build.sh        -> target/aarch64-unknown-linux-gnu/debian/dermcam_<version>_arm64.deb
# Features: camera (nokhwa/V4L2), fbdev, tft, gpio, web, ort (ONNX Runtime loaded at run time),
# fleet (MQTT + signed model updates).
# The package ships ONNX Runtime's CPU library from PyPI's aarch64 wheel (cross/onnxruntime.env)
# under /usr/lib/dermcam/, where the default `auto` backend finds it.
set -euo pipefail
cd "$(dirname "$0")/.."
TARGET=aarch64-unknown-linux-gnu
FEATURES=${DERMCAM_FEATURES:-camera,fbdev,tft,gpio,web,ort,fleet}
CARGO_DEB_VERSION=3.8.0

# Debian's cross toolchain; libclang for bindgen (nokhwa's V4L2 bindings); qemu-user for the
# parity test. Installed when missing (needs root), otherwise just checked.
PKGS="gcc-aarch64-linux-gnu libc6-dev-arm64-cross libclang-dev qemu-user"
if ! dpkg -s $PKGS > /dev/null 2>&1; then
    if [ "$(id -u)" = 0 ]; then
        # (Two lines: a failed update, e.g. apt locked by another install, must stop the build.)
        apt-get update -q
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $PKGS
    else
        echo "cross/build.sh: install first: sudo apt-get install $PKGS" >&2
        exit 1
    fi
fi
rustup target add "$TARGET"
if ! cargo deb --version 2> /dev/null | grep -q "$CARGO_DEB_VERSION"; then
    cargo install cargo-deb --version "$CARGO_DEB_VERSION" --locked
fi

# Linker and runner come from .cargo/config.toml (aarch64-linux-gnu-gcc, qemu-aarch64).
# bindgen must parse V4L2 headers for the target, not the host.
export BINDGEN_EXTRA_CLANG_ARGS_aarch64_unknown_linux_gnu="--sysroot=/usr/aarch64-linux-gnu"
cargo build --release --target "$TARGET" --features "$FEATURES"
# ONNX Runtime's aarch64 CPU library, pinned by version + sha256 (cross/onnxruntime.env).
bash cross/fetch-onnxruntime.sh
cargo deb --target "$TARGET" --no-build --strip
deb=$(ls -t target/$TARGET/debian/dermcam_*_arm64.deb | head -1)
echo "built $deb"
dpkg-deb --info "$deb" | sed -n '/Package:/,$p'
