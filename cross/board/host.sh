#!/usr/bin/env bash
# Host packages for the emulated board: QEMU 10 from bookworm-backports (bookworm's 7.2
# qemu-system-arm conflicts with the machine's qemu-utils 10), mmdebstrap, and binfmt for arm64
# so maintainer scripts run under qemu-user; Pillow for the screen comparison, Mosquitto and socat
# for the fleet queue check. Needs root; idempotent.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
need=""
command -v qemu-system-aarch64 > /dev/null || need=1
command -v mmdebstrap > /dev/null || need=1
[ -x /usr/bin/qemu-aarch64-static ] || need=1
for c in /usr/sbin/mosquitto mosquitto_sub socat; do command -v "$c" > /dev/null || need=1; done
/usr/bin/python3 -c "import PIL" 2> /dev/null || need=1
if [ -n "$need" ]; then
    . /etc/os-release
    if [ "${VERSION_CODENAME:-}" = bookworm ]; then
        cat > /etc/apt/sources.list.d/bookworm-backports.sources <<'SRC'
Types: deb
URIs: http://deb.debian.org/debian
Suites: bookworm-backports
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
        bp=/bookworm-backports
    else
        bp=""
    fi
    apt-get update -q
    apt-get install -y -q --no-install-recommends \
        qemu-system-arm$bp qemu-system-common$bp qemu-system-data$bp qemu-user-static$bp \
        mmdebstrap e2fsprogs arch-test python3-pil mosquitto mosquitto-clients socat
fi
mountpoint -q /proc/sys/fs/binfmt_misc || mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc
if [ ! -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ]; then
    # QEMU 10's packages ship systemd-binfmt files only; register by hand (flags POF: the static
    # interpreter is opened at registration, so chroots need no copy of it).
    cat /usr/lib/binfmt.d/qemu-aarch64.conf > /proc/sys/fs/binfmt_misc/register
fi
arch-test arm64 > /dev/null || { echo "board: arm64 binaries do not run here (binfmt)" >&2; exit 1; }
