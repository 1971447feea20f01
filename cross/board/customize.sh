#!/usr/bin/env bash
# Board settings written into the image (files only, no chroot): what a person would set up on
# a fresh Pi image, plus the emulator's camera. Part of the image cache key.
set -euo pipefail
R=$1
echo board > "$R/etc/hostname"
printf '127.0.0.1 localhost\n127.0.1.1 board\n' > "$R/etc/hosts"
echo '/dev/vda / ext4 defaults,noatime 0 1' > "$R/etc/fstab"
# A test board: root logs in on the serial console without a password (the host drives it).
sed -i 's/^root:[^:]*:/root::/' "$R/etc/shadow"
mkdir -p "$R/etc/systemd/system/serial-getty@ttyAMA0.service.d"
printf '[Service]\nExecStart=\nExecStart=-/sbin/agetty --autologin root --noclear --keep-baud 115200,38400,9600 %%I dumb\n' \
  > "$R/etc/systemd/system/serial-getty@ttyAMA0.service.d/autologin.conf"
mkdir -p "$R/etc/systemd/network"
printf '[Match]\nName=en*\n[Network]\nDHCP=yes\n' > "$R/etc/systemd/network/20-wired.network"
ln -sf /lib/systemd/system/systemd-networkd.service "$R/etc/systemd/system/multi-user.target.wants/"
# QEMU's virt board wires its power button to PL061 line 3: that line is dermcam's button
# here, so the kernel's gpio-keys must not claim it and logind must not power off on it.
mkdir -p "$R/etc/systemd/logind.conf.d"
printf '[Login]\nHandlePowerKey=ignore\n' > "$R/etc/systemd/logind.conf.d/powerkey.conf"
mkdir -p "$R/etc/modprobe.d" "$R/etc/modules-load.d"
echo 'blacklist gpio_keys' > "$R/etc/modprobe.d/board-gpio-keys.conf"
# The camera: vivid, the kernel's V4L2 test driver, with a capture node (/dev/video0, a webcam
# input and an HDMI input) and an output node (/dev/video1) it can loop back to the capture.
echo 'options vivid n_devs=1 node_types=0x101' > "$R/etc/modprobe.d/board-vivid.conf"
echo vivid > "$R/etc/modules-load.d/board-vivid.conf"
# The hardware watchdog (i6300esb): systemd pings it and the board resets if systemd hangs.
mkdir -p "$R/etc/systemd/system.conf.d"
printf '[Manager]\nRuntimeWatchdogSec=10s\n' > "$R/etc/systemd/system.conf.d/board-watchdog.conf"
# Logs survive a power cut (the checks read the previous boot's journal).
mkdir -p "$R/var/log/journal"
