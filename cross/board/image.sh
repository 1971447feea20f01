#!/usr/bin/env bash
# The emulated board's disk, built from Debian's apt archive and cached:
#   bash cross/board/image.sh           -> prints the cache folder holding rootfs.tar, vmlinuz, initrd
# Debian bookworm arm64 (systemd, udev, Debian's 6.1 kernel with the vivid, virtio-gpu, PL061
# and i6300esb drivers), no dermcam: run.sh installs the .deb into a copy each run. The cache
# key is this file and customize.sh, so a changed package list or board setting rebuilds it.
# Needs root (mmdebstrap --mode=root, binfmt for arm64 maintainer scripts).
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
CACHE=${DERMCAM_BOARD_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/dermcam-board}
KEY=$(cat "$HERE/image.sh" "$HERE/customize.sh" | sha256sum | cut -c1-16)
OUT=$CACHE/$KEY
if [ -s "$OUT/rootfs.tar" ] && [ -s "$OUT/vmlinuz" ] && [ -s "$OUT/initrd" ]; then
    echo "$OUT"
    exit 0
fi
bash "$HERE/host.sh" >&2
rm -rf "$CACHE"/*/  2> /dev/null || true   # one image at a time: 700 MB each
mkdir -p "$OUT"
ROOT=$(mktemp -d "$CACHE/build.XXXXXX")
trap 'rm -rf "$ROOT"' EXIT
start=$(date +%s)
# Kernel modules go into the initrd by list: Debian's default (MODULES=most) runs modprobe for
# hundreds of modules under qemu-user, more than 10 min; the board needs three.
mmdebstrap --arch=arm64 --variant=apt --mode=root --quiet \
  --include=systemd-sysv,udev,kmod,linux-image-arm64,initramfs-tools,zstd,v4l-utils,gpiod,iproute2,procps,util-linux,adduser,ca-certificates \
  --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-exclude=/usr/share/man/*' \
  --dpkgopt='path-exclude=/usr/share/locale/*' --dpkgopt='path-include=/usr/share/locale/locale.alias' \
  --setup-hook='mkdir -p "$1/etc/initramfs-tools/conf.d" "$1/etc/initramfs-tools/hooks"' \
  --setup-hook='echo MODULES=list > "$1/etc/initramfs-tools/conf.d/zz-board"' \
  --setup-hook='printf "#!/bin/sh\n[ \"\$1\" = prereqs ] && exit 0\n. /usr/share/initramfs-tools/hook-functions\nmanual_add_modules virtio_pci virtio_blk ext4\n" > "$1/etc/initramfs-tools/hooks/board-virtio"; chmod +x "$1/etc/initramfs-tools/hooks/board-virtio"' \
  --customize-hook="bash $HERE/customize.sh \"\$1\"" \
  --customize-hook='rm -f "$1"/var/lib/apt/lists/*_Packages "$1"/var/cache/apt/*.bin' \
  bookworm "$ROOT/rootfs" http://deb.debian.org/debian >&2
cp "$ROOT"/rootfs/boot/vmlinuz-* "$OUT/vmlinuz"
cp "$ROOT"/rootfs/boot/initrd.img-* "$OUT/initrd"
tar --numeric-owner -C "$ROOT/rootfs" -cpf "$OUT/rootfs.tar" .
echo "board image built in $(( $(date +%s) - start )) s: $OUT" >&2
echo "$OUT"
