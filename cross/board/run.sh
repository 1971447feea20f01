#!/usr/bin/env bash
# The arm64 package on an emulated board, against real kernel drivers:
#   bash cross/board/run.sh [--keep] [--only CHECK,...]
# Builds (or reuses) the board image from apt (image.sh), installs the arm64 .deb that
# cross/build.sh made (building it if missing) into a copy, boots it under
# qemu-system-aarch64 -M virt and runs the checks (checks.py): boot to app, camera (vivid) by
# path and by name, YUYV and NV12, unplug/replug, the test pattern answered "not a lesion",
# screen (fbdev on virtio-gpu, read back through QEMU's screendump) against the renderer's PNG,
# GPIO button (PL061), web UI and API from the host, systemd watchdog on a hung inference,
# journald levels, clean stop, hardware watchdog reset (i6300esb), power cut with captures and
# queued fleet results. Report: target/board/report.md, screens: target/board/screen-*.png.
# --keep leaves the board running (serial console and web through forwarded loopback ports).
# Needs root (image build, chroot install); about 15 min on 2 cores, plus about 5 min the first
# time for the image.
set -euo pipefail
cd "$(dirname "$0")/../.."
# Extra arguments go to checks.py: --keep, --only camera,button,... (a subset, for debugging).
ARGS=("$@")
W=$PWD/target/board
TARGET=aarch64-unknown-linux-gnu

bash cross/board/host.sh
IMG=$(bash cross/board/image.sh)
deb=$(ls -t target/$TARGET/debian/dermcam_*_arm64.deb 2> /dev/null | head -1 || true)
[ -n "$deb" ] || { bash cross/build.sh; deb=$(ls -t target/$TARGET/debian/dermcam_*_arm64.deb | head -1); }
[ -x target/release/dermcam ] || cargo build --release

rm -rf "$W"
mkdir -p "$W/root"
start=$(date +%s)
tar -C "$W/root" -xpf "$IMG/rootfs.tar"
# Installed the way a person would (dpkg, maintainer scripts under qemu-user), before the
# first boot: the service then starts at boot like on a board where the package is installed.
cp "$deb" "$W/root/tmp/dermcam.deb"
chroot "$W/root" dpkg -i /tmp/dermcam.deb > "$W/dpkg.log" 2>&1 || { cat "$W/dpkg.log"; exit 1; }
rm "$W/root/tmp/dermcam.deb"
TOKEN=$(openssl rand -hex 16)
MQTT_PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cat > "$W/config.toml" <<CFG
# The emulated board's configuration (cross/board/run.sh).
board = "qemu-virt"

[web]
bind = "0.0.0.0:8080"
token = "$TOKEN"

[capture]
enabled = true

[fleet]
# The host's Mosquitto, reached through QEMU's guestfwd (down until the power-cut check).
broker = "mqtt://10.0.2.100:1883"
device_id = "board"
max_backoff_ms = 2000
CFG
cp "$W/config.toml" "$W/root/etc/dermcam/config.toml"
truncate -s 3G "$W/disk.img"
mkfs.ext4 -q -L root -d "$W/root" "$W/disk.img"
rm -rf "$W/root"
echo "board disk ready in $(( $(date +%s) - start )) s ($(dpkg-deb -f "$deb" Package Version | tr '\n' ' '))"

# Debian's interpreter: python3-pil comes from apt (host.sh), not a user-installed Python.
/usr/bin/python3 cross/board/checks.py --work "$W" --kernel "$IMG/vmlinuz" --initrd "$IMG/initrd" \
    --config "$W/config.toml" --token "$TOKEN" --mqtt-port "$MQTT_PORT" \
    --samples tests/samples --host-dermcam target/release/dermcam --host-bundle models/effl0-v2 \
    "${ARGS[@]}"
