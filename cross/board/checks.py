#!/usr/bin/env python3
"""Boots the emulated arm64 board (disk made by run.sh) and checks dermcam against the guest's
real kernel drivers: V4L2 (vivid), framebuffer (virtio-gpu), GPIO (PL061), hardware watchdog
(i6300esb), systemd and journald. Writes report.md (one line per check with what it measured)
and the screen as PNGs into the work folder; exit status 1 if a check failed.

The host drives the guest through its serial console (root autologin, one command per line,
each ended by a marker carrying its exit status) and QEMU's monitor (screendump, the power
button); the web UI is reached through a forwarded loopback port. Network: user mode with
restrict=on (the guest reaches nothing but the forwarded broker port)."""

import argparse
import base64
import json
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

from PIL import Image, ImageChops

SAMPLE = "melanoma__ISIC_0000154.jpg"
GUEST_SAMPLES = "/usr/share/dermcam/samples"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Serial:
    """The guest's serial console: a reader thread keeps everything (also logged to a file)."""

    def __init__(self, path, log):
        self.buf = b""
        self.cond = threading.Condition()
        self.n = 0
        deadline = time.time() + 30
        while True:
            try:
                self.sock = socket.socket(socket.AF_UNIX)
                self.sock.connect(str(path))
                break
            except OSError:
                if time.time() > deadline:
                    raise
                time.sleep(0.2)
        self.log = open(log, "ab")
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        while True:
            try:
                data = self.sock.recv(65536)
            except OSError:
                data = b""
            if not data:
                with self.cond:
                    self.closed = True
                    self.cond.notify_all()
                return
            self.log.write(data)
            self.log.flush()
            with self.cond:
                self.buf += data
                self.cond.notify_all()

    def mark(self):
        with self.cond:
            return len(self.buf)

    def wait_for(self, pattern, timeout, since=0):
        """Waits for a regex (bytes) in the console output after offset `since`."""
        rx = re.compile(pattern)
        deadline = time.time() + timeout
        with self.cond:
            while True:
                m = rx.search(self.buf, since)
                if m:
                    return m
                left = deadline - time.time()
                if left <= 0 or getattr(self, "closed", False):
                    return None
                self.cond.wait(min(left, 1.0))

    def send(self, text):
        self.sock.sendall(text.encode())

    def login(self, timeout, since=0):
        """Waits for the autologin shell, then makes it scriptable."""
        if not self.wait_for(rb"root@board:[^\n]*# ", timeout, since):
            return False
        self.sh("stty -echo; export TERM=dumb PAGER=cat SYSTEMD_PAGER= SYSTEMD_COLORS=0; PS1=; dmesg -n 1", 30)
        return True

    def sh(self, cmd, timeout=60):
        """Runs one shell line; returns (exit status, output) or (None, partial) on timeout."""
        self.n += 1
        tag = f"__END_{self.n}_"
        start = self.mark()
        # The marker is split by quotes so that an echoed command line never matches it.
        self.send(f'{cmd}; echo "__E""ND_{self.n}_$?__"\n')
        m = self.wait_for(re.escape(tag.encode()) + rb"(\d+)__", timeout, start)
        with self.cond:
            out = self.buf[start : m.start() if m else len(self.buf)]
        text = out.decode(errors="replace").replace("\r", "")
        return (int(m.group(1)) if m else None), text.strip()


class Monitor:
    def __init__(self, path):
        self.path = str(path)

    def cmd(self, line):
        with socket.socket(socket.AF_UNIX) as s:
            s.connect(self.path)
            s.settimeout(30)
            buf = b""
            while b"(qemu) " not in buf:
                buf += s.recv(4096)
            s.sendall(line.encode() + b"\n")
            buf = b""
            while buf.count(b"(qemu) ") < 1:
                buf += s.recv(4096)
            return buf.decode(errors="replace")


class Board:
    def __init__(self, args):
        self.a = args
        self.work = Path(args.work).resolve()
        self.web_port = free_port()
        self.mqtt_port = args.mqtt_port
        self.token = args.token
        self.results = []
        self.qemu = None
        self.boots = 0

    # ---- the emulator -------------------------------------------------------------------
    def boot(self):
        self.boots += 1
        w = self.work
        for f in ("serial.sock", "mon.sock"):
            (w / f).unlink(missing_ok=True)
        net = (
            f"user,id=n0,restrict=on,hostfwd=tcp:127.0.0.1:{self.web_port}-:8080,"
            # cmd: (one socat per guest connection) rather than tcp:, which QEMU connects once
            # at start-up and fails on while the host's broker is down. socat's own messages go
            # to /dev/null: QEMU hands the command the connection as stderr too.
            f"guestfwd=tcp:10.0.2.100:1883-cmd:socat -lf /dev/null - TCP:127.0.0.1:{self.mqtt_port}"
        )
        cmd = [
            "qemu-system-aarch64",
            "-M",
            "virt",
            "-cpu",
            "cortex-a72",
            "-smp",
            "2",
            "-m",
            "1024",
            "-accel",
            "tcg,thread=multi",
            "-kernel",
            self.a.kernel,
            "-initrd",
            self.a.initrd,
            "-append",
            "root=/dev/vda rw console=ttyAMA0 quiet",
            "-drive",
            f"if=none,file={w / 'disk.img'},format=raw,id=hd0",
            "-device",
            "virtio-blk-pci,drive=hd0",
            "-device",
            "virtio-gpu-pci",
            "-device",
            "i6300esb",
            "-netdev",
            net,
            "-device",
            "virtio-net-pci,netdev=n0,romfile=",
            "-display",
            "none",
            "-chardev",
            f"socket,id=ser0,path={w / 'serial.sock'},server=on,wait=off",
            "-serial",
            "chardev:ser0",
            "-monitor",
            f"unix:{w / 'mon.sock'},server=on,wait=off",
        ]
        self.powered_on = time.time()
        self.qemu = subprocess.Popen(cmd, stdout=open(w / "qemu.log", "ab"), stderr=subprocess.STDOUT)
        for _ in range(100):
            if (w / "serial.sock").exists() and (w / "mon.sock").exists():
                break
            time.sleep(0.1)
        self.serial = Serial(w / "serial.sock", w / "serial.log")
        self.mon = Monitor(w / "mon.sock")

    def pull_plug(self):
        """Power off without warning: the emulator killed."""
        self.qemu.send_signal(signal.SIGKILL)
        self.qemu.wait()

    def shutdown(self):
        if self.qemu and self.qemu.poll() is None:
            self.serial.send("poweroff\n")
            try:
                self.qemu.wait(90)
            except subprocess.TimeoutExpired:
                self.pull_plug()

    # ---- helpers --------------------------------------------------------------------------
    def check(self, name, ok, measured):
        self.results.append((name, bool(ok), measured))
        print(f"[{'PASS' if ok else 'FAIL'}] {name}: {measured}", flush=True)

    def sh(self, cmd, timeout=60):
        return self.serial.sh(cmd, timeout)

    def out(self, cmd, timeout=60):
        return self.sh(cmd, timeout)[1]

    def unit(self, *props):
        text = self.out("systemctl show dermcam " + " ".join(f"-p {p}" for p in props))
        return dict(l.split("=", 1) for l in text.splitlines() if "=" in l)

    def http(self, path, data=None, ctype=None, timeout=60):
        req = urllib.request.Request(f"http://127.0.0.1:{self.web_port}{path}", data=data)
        req.add_header("Authorization", f"Bearer {self.token}")
        if ctype:
            req.add_header("Content-Type", ctype)
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read()

    def status(self):
        try:
            return json.loads(self.http("/api/v1/status", timeout=20)[1])
        except Exception as e:  # noqa: BLE001 - any failure is "not answering yet"
            return {"error": str(e)}

    def wait(self, pred, timeout, step=1.0):
        deadline = time.time() + timeout
        while time.time() < deadline:
            v = pred()
            if v:
                return v
            time.sleep(step)
        return None

    def wait_active(self, timeout):
        """Polls until the unit is active (Type=notify: READY=1 arrived)."""
        return self.wait(lambda: self.out("systemctl is-active dermcam") == "active", timeout, 2)

    def screendump(self, name):
        ppm = self.work / f"{name}.ppm"
        self.mon.cmd(f"screendump {ppm}")
        self.wait(lambda: ppm.exists() and ppm.stat().st_size > 0, 10, 0.2)
        img = Image.open(ppm).convert("RGB")
        img.save(self.work / f"{name}.png")
        ppm.unlink()
        return img

    def press(self):
        """The board's power button: PL061 line 3 high for 100 ms."""
        self.mon.cmd("system_powerdown")

    def write_config(self, **source):
        cfg = self.a.config_text
        if source:
            cfg += '\n[source]\nkind = "camera"\n' + "".join(f"{k} = {json.dumps(v)}\n" for k, v in source.items())
        b64 = base64.b64encode(cfg.encode()).decode()
        self.sh(f"echo {b64} | base64 -d > /etc/dermcam/config.toml")

    def captures(self):
        """Capture folders and, for each, the files it holds."""
        text = self.out(
            "cd /var/lib/dermcam/captures 2>/dev/null && for d in */; do echo \"$d $(ls $d | tr '\\n' ' ')\"; done; cd /"
        )
        caps = {}
        for line in text.splitlines():
            parts = line.split()
            if parts and parts[0].endswith("/"):
                caps[parts[0].rstrip("/")] = set(parts[1:])
        return caps

    # ---- the checks -----------------------------------------------------------------------
    def first_boot(self):
        self.boot()
        if not self.serial.login(300):
            self.check("boot", False, "no shell on the serial console within 300 s")
            return False
        shell = time.time() - self.powered_on
        ok = self.wait_active(400)
        host_s = time.time() - self.powered_on
        u = self.unit("ActiveEnterTimestampMonotonic", "Type", "StatusText", "NRestarts")
        guest_s = int(u.get("ActiveEnterTimestampMonotonic", "0")) / 1e6
        analyze = self.out("systemd-analyze | head -1")
        self.check(
            "boot to app",
            ok and u.get("Type") == "notify",
            f"dermcam.service active (Type=notify, READY=1 received) {guest_s:.1f} s after the kernel started "
            f'({host_s:.0f} s of host time from power-on; shell at {shell:.0f} s); status "{u.get("StatusText", "")}"; '
            f"{analyze}",
        )
        return ok

    def camera(self, label, device, fmt, size):
        w, h = size
        st = self.wait(
            lambda: (s := self.status()).get("source") == "live" and s.get("frame_version", 0) > 0 and s, 120
        )
        log = self.out(f"journalctl -u dermcam -b --no-pager -o cat | grep -a 'camera {device}' | tail -1")
        s0 = self.status()
        time.sleep(10)
        s1 = self.status()
        frames = s1.get("counters", {}).get("frames", 0) - s0.get("counters", {}).get("frames", 0)
        dt = s1.get("uptime_s", 0) - s0.get("uptime_s", 1)
        fps = frames / dt if dt > 0 else 0
        nmodes = log.count("@")
        self.check(
            f"camera {label}",
            bool(st) and frames > 0 and "modes:" in log,
            f"{device} opened through nokhwa (V4L2, vivid): {fmt} {w}x{h}; {nmodes} modes offered; "
            f'{fps:.1f} frames/s captured in the guest, {s1.get("fps", 0):.2f} classified/s; source "{s1.get("source")}"',
        )
        return s1

    def test_pattern(self, st):
        last = st.get("last_prediction") or {}
        self.check(
            "test pattern is not a lesion",
            st.get("outcome") == "not_lesion",
            f'vivid\'s colour bars: outcome "{st.get("outcome")}", headline "{st.get("headline")}", '
            f"not-a-lesion score {last.get('ood_score', float('nan')):.1f}",
        )

    def web(self):
        code, page = self.http("/")
        page = page.decode(errors="replace")
        sample = Path(self.a.samples) / SAMPLE
        boundary = "dermcamboard"
        body = (
            (
                f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="{SAMPLE}"\r\n'
                "Content-Type: image/jpeg\r\n\r\n"
            ).encode()
            + sample.read_bytes()
            + f"\r\n--{boundary}--\r\n".encode()
        )
        t = time.time()
        code2, res = self.http("/api/v1/classify", body, f"multipart/form-data; boundary={boundary}", 180)
        took = time.time() - t
        res = json.loads(res)
        ref = json.loads(
            subprocess.run(
                [
                    self.a.host_dermcam,
                    "classify",
                    "--model",
                    self.a.host_bundle,
                    "--backend",
                    "tract",
                    "--top-k",
                    "9",
                    "--json",
                    str(sample),
                ],
                check=True,
                capture_output=True,
                text=True,
            ).stdout.splitlines()[0]
        )
        board_p = {c["name"]: c["probability"] for c in res.get("classes", [])}
        ref_p = {c["name"]: c["probability"] for c in ref.get("top", [])}
        common = set(board_p) & set(ref_p)
        diff = max((abs(board_p[c] - ref_p[c]) for c in common), default=1.0)
        top_b = res["classes"][0]["name"] if res.get("classes") else None
        top_r = ref["top"][0]["name"] if ref.get("top") else None
        self.check(
            "web UI and API from the host",
            code == 200 and "not a medical device" in page.lower() and code2 == 200 and top_b == top_r and diff <= 1e-3,
            f"GET / {code} (research-use notice shown); POST /api/v1/classify {SAMPLE}: {code2} in {took:.1f} s, "
            f'top "{top_b}" (x86-64 `dermcam classify`: "{top_r}"), max |dp| over {len(common)} classes {diff:.1e}',
        )

    def button_and_screen(self):
        before = self.captures()
        info = self.out("gpioinfo gpiochip0 | grep -a 'line   3:'")
        self.press()
        frozen = self.wait(lambda: (self.status().get("display") or {}).get("frozen"), 60)
        new = self.wait(lambda: {k: v for k, v in self.captures().items() if k not in before}, 60, 2) or {}
        files = sorted(next(iter(new.values()), set()))
        self.check(
            "button",
            frozen and new and "result.json" in files and "image.jpg" in files and "dermcam-button" in info,
            f"PL061 line 3 held by dermcam ({' '.join(info.split())}); QEMU power button pressed -> "
            f"frozen {bool(frozen)}, capture {next(iter(new), 'none')} with {', '.join(files) or 'no files'}",
        )
        # The screen while frozen: the renderer's canvas (API) against what the kernel scanned
        # out (QEMU screendump), read twice around the dump to be sure it did not change.
        _, a = self.http("/api/v1/screen.png")
        dump = self.screendump("screen-frozen")
        _, b = self.http("/api/v1/screen.png")
        ra = self.work / "screen-frozen-renderer.png"
        ra.write_bytes(a)
        ia = Image.open(ra).convert("RGB")
        ib = Image.open(__import__("io").BytesIO(b)).convert("RGB")
        stable = ImageChops.difference(ia, ib).getbbox() is None
        same_size = ia.size == dump.size
        if same_size:
            diff = ImageChops.difference(ia, dump)
            bad = sum(1 for p in diff.getdata() if p != (0, 0, 0))
            swapped = ImageChops.difference(Image.merge("RGB", ia.split()[::-1]), dump)
            bad_swapped = sum(1 for p in swapped.getdata() if p != (0, 0, 0))
        else:
            bad = bad_swapped = -1
        if not (stable and same_size and bad == 0):
            # What the app said about the screen and the console, for whoever reads the report.
            print(
                self.out(
                    "journalctl -u dermcam -b --no-pager -o cat | grep -ai 'screen\\|tty1\\|fb0' | tail -5; "
                    "cat /sys/class/tty/tty0/active; ls -l /dev/fb0 /dev/tty1"
                ),
                flush=True,
            )
        self.check(
            "screen",
            stable and same_size and bad == 0,
            f"/dev/fb0 (virtio-gpu, {dump.size[0]}x{dump.size[1]}) read back by screendump vs the renderer's "
            f"PNG of the same state ({ia.size[0]}x{ia.size[1]}): {bad} pixels differ (with red and blue swapped: "
            f"{bad_swapped}); target/board/screen-frozen.png",
        )
        self.press()
        released = self.wait(lambda: not (self.status().get("display") or {}).get("frozen", True), 60)
        self.check("button release", released, "second press -> live again" if released else "still frozen after 60 s")

    def unplug(self):
        pid = self.unit("MainPID", "NRestarts")
        t = time.time()
        self.sh("echo vivid.0 > /sys/bus/platform/drivers/vivid/unbind")
        gone = self.wait(lambda: (s := self.status()).get("source", "").startswith("disconnected") and s, 60, 0.5)
        seen = time.time() - t
        time.sleep(3)
        self.screendump("screen-unplugged")
        t = time.time()
        self.sh("echo vivid.0 > /sys/bus/platform/drivers/vivid/bind")
        back = self.wait(lambda: self.status().get("source") == "live", 90, 0.5)
        again = time.time() - t
        pid2 = self.unit("MainPID", "NRestarts")
        self.check(
            "camera unplugged and back",
            gone and back and pid == pid2,
            f'vivid unbound: status "{(gone or {}).get("source", "unchanged")}" after {seen:.1f} s '
            f"(target/board/screen-unplugged.png); bound again: live after {again:.1f} s; "
            f"same process (MainPID {pid.get('MainPID')} -> {pid2.get('MainPID')}, NRestarts {pid2.get('NRestarts')})",
        )

    def restart_with(self, **source):
        self.write_config(**source)
        rc, _ = self.sh("systemctl restart dermcam", 400)
        return rc == 0 and self.wait_active(60)

    def watchdog_service(self):
        before = int(self.unit("NRestarts").get("NRestarts", "0"))
        # The knob goes into the manager's environment, not a drop-in: a drop-in needs a
        # daemon-reload, during which PID 1 stops feeding the hardware watchdog, and on a slow
        # TCG guest the reload outlasted RuntimeWatchdogSec (10 s): the board was reset.
        self.sh("systemctl set-environment DERMCAM_TEST_HANG=infer:3")
        t = time.time()
        rc, _ = self.sh("systemctl restart dermcam", 400)
        restart_s = time.time() - t
        env = self.out("systemctl show-environment | grep -a DERMCAM_ || true").strip()
        t = time.time()
        restarted = self.wait(lambda: int(self.unit("NRestarts").get("NRestarts", "0")) > before, 240, 2)
        took = time.time() - t
        why = self.out("journalctl -u dermcam -b --no-pager -o cat | grep -a -i 'watchdog timeout\\|stall' | tail -2")
        wd = self.unit("WatchdogUSec").get("WatchdogUSec")
        self.sh("systemctl unset-environment DERMCAM_TEST_HANG")
        self.sh("systemctl restart dermcam", 400)
        ok = self.wait_active(60)
        self.check(
            "watchdog: hung inference",
            restarted and "watchdog" in why.lower() and ok,
            f"DERMCAM_TEST_HANG=infer:3 (WatchdogSec {wd}): killed and restarted by systemd {took:.0f} s after the "
            f"restart ({' / '.join(why.splitlines())}); back without the knob: {bool(ok)}"
            + (
                ""
                if restarted
                else f"; the knob's restart: exit {rc} in {restart_s:.0f} s, manager environment {env!r}"
            ),
        )

    def journald(self):
        warn = self.out(
            "journalctl -u dermcam -b --no-pager -o cat -p warning..warning | grep -a -c 'DERMCAM_TEST_HANG'"
        )
        info = self.out("journalctl -u dermcam -b --no-pager -o cat -p info..info | grep -a -c 'camera '")
        mislabelled = self.out(
            "journalctl -u dermcam -b --no-pager -o cat -p info..info | grep -a -c '^warning:\\|^error:'"
        )
        n = lambda s: int(s.split()[-1]) if s.split() and s.split()[-1].isdigit() else 0  # noqa: E731
        self.check(
            "journald levels",
            n(warn) > 0 and n(info) > 0 and n(mislabelled) == 0,
            f"{n(warn)} test-knob warnings at priority warning, {n(info)} camera lines at info, "
            f"{n(mislabelled)} warning/error lines filed as info",
        )

    def stop_clean(self):
        t = time.time()
        rc, _ = self.sh("systemctl stop dermcam", 120)
        took = time.time() - t
        u = self.unit("Result", "ExecMainCode", "ExecMainStatus", "ActiveState")
        self.check(
            "systemctl stop",
            rc == 0 and u.get("Result") == "success" and u.get("ActiveState") == "inactive",
            f"stopped in {took:.1f} s: Result={u.get('Result')}, exit status {u.get('ExecMainStatus')}",
        )
        self.sh("systemctl start dermcam", 400)
        return self.wait_active(60)

    def hardware_watchdog(self):
        wd = self.out("journalctl -b --no-pager -o cat | grep -a 'hardware watchdog' | head -1")
        # The kernel does not reboot on its own after a panic (kernel.panic = 0): only the
        # i6300ESB, armed by systemd and no longer fed, can reset it. The console is quiet, so
        # the reset shows as a new boot id (same QEMU process) rather than boot messages.
        panic = self.out("cat /proc/sys/kernel/panic").split()[-1:]
        boot_id = self.out("cat /proc/sys/kernel/random/boot_id").split()[-1:]
        since = self.serial.mark()
        t = time.time()
        self.serial.send("echo 1 > /proc/sys/kernel/sysrq; echo c > /proc/sysrq-trigger\n")
        crashed = self.serial.wait_for(rb"Kernel panic|sysrq triggered crash", 60, since)
        shell = self.serial.login(400, since)
        t_shell = time.time() - t
        up = shell and self.wait_active(400)
        t_up = time.time() - t
        new_id = self.out("cat /proc/sys/kernel/random/boot_id").split()[-1:] if shell else []
        same_qemu = self.qemu.poll() is None
        reset = bool(shell and boot_id and new_id and new_id != boot_id and same_qemu)
        self.check(
            "hardware watchdog",
            crashed and reset and up and "i6300ESB" in wd and panic == ["0"],
            f"{wd.strip() or 'no hardware watchdog in the journal'}; kernel.panic={''.join(panic)} (no self-reboot); "
            f"kernel crashed (sysrq c, panic on the console: {bool(crashed)}) -> reset by the watchdog "
            f"(new boot id: {reset}, same emulator process: {same_qemu}), shell again after {t_shell:.0f} s, "
            f"dermcam active {t_up:.0f} s after the crash",
        )
        return up

    def power_cut(self):
        self.press()
        self.wait(lambda: (self.status().get("display") or {}).get("frozen"), 60)
        self.press()
        self.wait(lambda: not (self.status().get("display") or {}).get("frozen", True), 60)
        self.press()
        time.sleep(1.5)
        self.pull_plug()
        # Next boot: nothing torn; then the broker comes up and the queue drains.
        self.boot()
        up = self.serial.login(300) and self.wait_active(400)
        caps = self.captures()
        torn = [k for k, v in caps.items() if not {"image.jpg", "result.json"} <= v]
        hidden = self.out("ls -A /var/lib/dermcam/captures | grep -c '^\\.' ")
        queued = self.out("ls /var/lib/dermcam/fleet-queue 2>/dev/null | wc -l")
        queued = int(queued.split()[-1]) if queued.split() and queued.split()[-1].isdigit() else -1
        got = self.work / "mqtt-results.txt"
        # The device retries every 2 s and a broker acknowledges a QoS 1 publish with nobody
        # subscribed, so the subscriber must be in place before the device can reach the
        # broker: the broker listens on a private port, and the port the guest's forward
        # dials opens (a relay) only once the broker has acknowledged the subscription.
        port = free_port()
        log = self.work / "mosquitto.log"
        broker = subprocess.Popen(
            ["/usr/sbin/mosquitto", "-v", "-p", str(port)], stdout=subprocess.DEVNULL, stderr=open(log, "w")
        )
        self.wait(lambda: "running" in log.read_text(), 20, 0.2)
        sub = subprocess.Popen(
            ["mosquitto_sub", "-p", str(port), "-q", "1", "-t", "dermcam/+/result"],
            stdout=open(got, "w"),
            stderr=subprocess.DEVNULL,
        )
        subscribed = self.wait(lambda: "Sending SUBACK" in log.read_text(), 20, 0.2)
        relay = subprocess.Popen(
            [
                "socat",
                "-lf",
                "/dev/null",
                f"TCP-LISTEN:{self.mqtt_port},bind=127.0.0.1,reuseaddr,fork",
                f"TCP:127.0.0.1:{port}",
            ]
        )
        drained = self.wait(
            lambda: self.out("ls /var/lib/dermcam/fleet-queue 2>/dev/null | wc -l").split()[-1:] == ["0"], 180, 3
        )
        time.sleep(2)
        sub.terminate()
        relay.terminate()
        broker.terminate()
        lines = [l for l in got.read_text().splitlines() if l.strip().startswith("{")]
        ids = {json.loads(l).get("id") for l in lines}
        self.check(
            "power cut",
            up and not torn and queued > 0 and subscribed and drained and len(ids) >= queued,
            f"emulator killed 1.5 s after a capture; next boot: {len(caps)} captures, {len(torn)} torn, "
            f"{hidden.split()[-1] if hidden.split() else '?'} leftover temp entries; {queued} results queued -> "
            f"{len(ids)} distinct results received once the broker came up (queue empty: {bool(drained)})",
        )


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--work", required=True)
    ap.add_argument("--kernel", required=True)
    ap.add_argument("--initrd", required=True)
    ap.add_argument("--config", required=True, help="the board's /etc/dermcam/config.toml")
    ap.add_argument("--token", required=True)
    ap.add_argument("--mqtt-port", type=int, required=True)
    ap.add_argument("--samples", required=True)
    ap.add_argument("--host-dermcam", required=True)
    ap.add_argument("--host-bundle", required=True)
    ap.add_argument("--keep", action="store_true")
    ap.add_argument(
        "--only",
        default="",
        help="comma-separated subset after the boot: camera, web, "
        "button (with the screen), unplug, byname, watchdog, journald, reset (stop, "
        "hardware watchdog, power cut)",
    )
    a = ap.parse_args()
    only = {x.strip() for x in a.only.split(",") if x.strip()}

    def want(name):
        return not only or name in only

    a.config_text = Path(a.config).read_text()
    b = Board(a)
    t0 = time.time()
    try:
        if b.first_boot():
            if want("camera"):
                st = b.camera("by path", "/dev/video0", "YUYV", (640, 480))
                b.test_pattern(st)
            if want("web"):
                b.web()
            if want("button"):
                b.button_and_screen()
            if want("unplug"):
                b.unplug()
            if want("byname"):
                if b.restart_with(device="vivid-000-vid-cap", format="nv12", width=1280, height=720, fps=10):
                    b.camera("by name", "vivid-000-vid-cap", "NV12", (1280, 720))
                else:
                    b.check("camera by name", False, "dermcam did not come back with the NV12 1280x720 config")
                b.write_config()
            if want("watchdog"):
                b.watchdog_service()
            if want("journald"):
                b.journald()
            if want("reset") and b.stop_clean() and b.hardware_watchdog():
                b.power_cut()
    except Exception as e:  # noqa: BLE001 - a crash of the harness is a failed check, not a hang
        b.check("harness", False, f"{type(e).__name__}: {e}")
    finally:
        took = time.time() - t0
        if a.keep and b.qemu and b.qemu.poll() is None:
            print(
                f"board left running: serial console {b.work / 'serial.sock'} (e.g. socat - UNIX-CONNECT:...), "
                f"web http://127.0.0.1:{b.web_port}/ (token {b.token}), monitor {b.work / 'mon.sock'}"
            )
        else:
            b.shutdown()
    failed = [r for r in b.results if not r[1]]
    lines = [
        "# Emulated board checks",
        "",
        f"QEMU `virt` (cortex-a72, 2 vCPU, 1 GiB, TCG), Debian bookworm arm64, {b.boots} boots, "
        f"{took / 60:.1f} min. Produced by `bash cross/board/run.sh`.",
        "",
        "| check | result | measured |",
        "|---|---|---|",
    ] + [f"| {n} | {'pass' if ok else '**FAIL**'} | {m.replace('|', '/')} |" for n, ok, m in b.results]
    (b.work / "report.md").write_text("\n".join(lines) + "\n")
    print(f"{len(b.results) - len(failed)}/{len(b.results)} board checks passed; {b.work / 'report.md'}")
    sys.exit(1 if failed or not b.results else 0)


if __name__ == "__main__":
    main()
