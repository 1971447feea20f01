#!/usr/bin/env python3
"""Chaos soak: one `dermcam run` (slideshow of the real samples, the shipped Lite0 bundle, web,
fleet with signed updates) against a real Mosquitto while faults are injected at random from a
seed: broker restarts, uploads, freeze / release / capture / reload-model commands over MQTT,
signed model updates, SIGKILL of the device (restarted at once, as systemd would).

Invariants checked at the end (exit 1 if any fails):
  * every result that reached the device's disk queue (its debug log line "queued result ID")
    was received by the subscriber; duplicates are counted (removable by `id`), none missing;
  * no pipeline stage stalled: under a fake systemd notify socket with a watchdog, no
    `STATUS=stalled` and pings keep coming at the end;
  * RSS bounded (peak <= --max-rss-mb) and flat: once the first upload and update are done
    (and that process's own first upload), the median of each process's last 20 s no higher
    than that of its first 20 s + --max-growth-mb;
  * uploads answered 200 (or 503, busy) whenever the device was up, never a 5xx or a hang;
  * the retained fleet status tells the truth: online, queue empty, the model the web API names,
    the last signed update installed; after SIGTERM the goodbye says offline.

Usage: python3 tests/soak/soak.py [--seconds 120] [--seed N]   (CI: 120 s; 1800 on demand)
Needs target/release/dermcam, mosquitto and mosquitto-clients. Report: target/soak.md.
"""

import argparse
import json
import os
import random
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BIN = ROOT / "target/release/dermcam"
BUNDLE = ROOT / "models/effl0-v2"
SAMPLES = ROOT / "tests/samples"
TOKEN = __import__("secrets").token_hex(16)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Soak:
    def __init__(self, a):
        self.a = a
        self.rng = random.Random(a.seed)
        self.w = Path(a.work)
        self.w.mkdir(parents=True, exist_ok=True)
        self.mqtt_port = free_port()
        self.web_port = free_port()
        self.broker = self.sub = self.dev = None
        self.dev_runs = 0
        self.events = []  # (t, what)
        self.notify = []  # (t, message)
        self.rss = {}  # pid -> [(t, MB)]
        self.uploads = {"ok": 0, "busy": 0, "down": 0, "bad": []}
        self.versions = []
        self.t0 = time.time()
        self.stop = threading.Event()

    def log(self, what):
        t = time.time() - self.t0
        self.events.append((t, what))
        print(f"[{t:6.1f}] {what}", flush=True)

    # ---- broker and subscriber ----------------------------------------------------------
    def start_broker(self):
        conf = self.w / "mosquitto.conf"
        conf.write_text(
            f"listener {self.mqtt_port} 127.0.0.1\nallow_anonymous true\n"
            f"persistence true\npersistence_location {self.w}/\nmax_queued_messages 1000000\n"
        )
        self.broker = subprocess.Popen(
            [self.a.mosquitto, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=open(self.w / "broker.log", "a")
        )
        for _ in range(50):
            try:
                socket.create_connection(("127.0.0.1", self.mqtt_port), 0.2).close()
                break
            except OSError:
                time.sleep(0.1)
        # A persistent subscriber session (clean session off): what arrives while it is away is
        # kept by the broker (and in its persistence file across a graceful restart).
        self.sub = subprocess.Popen(
            [
                "mosquitto_sub",
                "-p",
                str(self.mqtt_port),
                "-q",
                "1",
                "-c",
                "-i",
                "soak-sub",
                "-t",
                "dermcam/soak/result",
                "-t",
                "dermcam/soak/status",
                "-v",
            ],
            stdout=open(self.w / "received.txt", "a"),
            stderr=subprocess.DEVNULL,
        )
        time.sleep(0.3)

    def stop_broker(self):
        self.sub.terminate()
        self.sub.wait()
        self.broker.terminate()  # graceful: the broker saves its persistence file
        self.broker.wait()
        self.broker = None

    def pub(self, topic, msg, retain=False):
        if self.broker is None:
            return False
        cmd = ["mosquitto_pub", "-p", str(self.mqtt_port), "-q", "1", "-t", topic, "-m", msg]
        return (
            subprocess.run(
                cmd + (["-r"] if retain else []), timeout=20, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
            ).returncode
            == 0
        )

    # ---- the device -----------------------------------------------------------------------
    def write_config(self):
        (self.w / "config.toml").write_text(f"""
[source]
kind = "images"
path = "{SAMPLES}"
interval_ms = 250

[screen]
kind = "png"
path = "{self.w}/screen.png"
width = 320
height = 240

[model]
path = "{BUNDLE}"
threads = 1

[pipeline]
stall_timeout_ms = 8000

[capture]
enabled = true
dir = "{self.w}/captures"

[web]
bind = "127.0.0.1:{self.web_port}"
token = "{TOKEN}"
freeze_interval_ms = 200

[fleet]
broker = "mqtt://127.0.0.1:{self.mqtt_port}"
device_id = "soak"
publish = "all"
max_rate_hz = 4
queue_dir = "{self.w}/queue"
status_interval_s = 2
max_backoff_ms = 2000

[fleet.updates]
public_key = "{self.public}"
models_dir = "{self.w}/models"
""")

    def start_device(self):
        self.dev_runs += 1
        env = dict(
            os.environ,
            NOTIFY_SOCKET=str(self.w / "notify.sock"),
            WATCHDOG_USEC="2000000",
            RUST_LOG="info,dermcam::fleet::mqtt=debug",
        )
        env.pop("DERMCAM_MODEL", None)
        self.dev = subprocess.Popen(
            [str(BIN), "run", "--config", str(self.w / "config.toml")],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=open(self.w / f"device-{self.dev_runs}.log", "w"),
        )
        self.rss[self.dev.pid] = []

    def notify_listener(self):
        p = self.w / "notify.sock"
        p.unlink(missing_ok=True)
        s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        s.bind(str(p))
        s.settimeout(0.2)
        while not self.stop.is_set():
            try:
                data = s.recv(4096).decode(errors="replace")
            except TimeoutError:
                continue
            for line in data.splitlines():
                self.notify.append((time.time() - self.t0, line))

    def rss_sampler(self):
        while not self.stop.is_set():
            d = self.dev
            if d is not None and d.poll() is None:
                try:
                    for line in open(f"/proc/{d.pid}/status"):
                        if line.startswith("VmRSS:"):
                            self.rss.setdefault(d.pid, []).append((time.time() - self.t0, int(line.split()[1]) / 1024))
                except OSError:
                    pass
            time.sleep(1)

    def http(self, path, data=None, ctype=None, timeout=60):
        req = urllib.request.Request(f"http://127.0.0.1:{self.web_port}{path}", data=data)
        req.add_header("Authorization", f"Bearer {TOKEN}")
        if ctype:
            req.add_header("Content-Type", ctype)
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read()

    def api_status(self):
        try:
            return json.loads(self.http("/api/v1/status", timeout=10)[1])
        except (OSError, ValueError, urllib.error.URLError):
            return None

    # ---- faults ---------------------------------------------------------------------------
    def upload(self):
        img = self.rng.choice(sorted(SAMPLES.glob("*.jpg")))
        b = "soakboundary"
        body = (
            (
                f'--{b}\r\nContent-Disposition: form-data; name="image"; filename="{img.name}"\r\n'
                "Content-Type: image/jpeg\r\n\r\n"
            ).encode()
            + img.read_bytes()
            + f"\r\n--{b}--\r\n".encode()
        )
        try:
            code, _ = self.http("/api/v1/classify", body, f"multipart/form-data; boundary={b}", 60)
            if code == 200:
                self.uploads["ok"] += 1
            else:
                self.uploads["bad"].append(code)
        except urllib.error.HTTPError as e:
            if e.code == 503:
                self.uploads["busy"] += 1
            else:
                self.uploads["bad"].append(e.code)
        except (TimeoutError, urllib.error.URLError, ConnectionError) as e:
            # Refused while the device restarts is expected; a hang on a live device is not.
            if isinstance(e, socket.timeout) or "timed out" in str(e):
                self.uploads["bad"].append("timeout")
            else:
                self.uploads["down"] += 1
        self.log(f"upload {img.name}")

    def command(self):
        c = self.rng.choice(["freeze", "release", "capture", "reload-model"])
        self.log(f"command {c} (sent: {self.pub('dermcam/soak/cmd', c)})")

    def broker_restart(self):
        self.stop_broker()
        down = self.rng.uniform(1, 6)
        self.log(f"broker down for {down:.1f} s")
        time.sleep(down)
        self.start_broker()
        self.oversized()

    def oversized(self):
        """A 5 MiB retained message on the device's command topic (the broker forgets it when
        it restarts, so it is put back each time): the link must stay up through every
        redelivery."""
        if self.broker is None:
            return
        big = self.w / "oversized.bin"
        if not big.exists():
            big.write_bytes(b"x" * (5 << 20))
        cmd = ["mosquitto_pub", "-p", str(self.mqtt_port), "-q", "1", "-r", "-t", "dermcam/soak/cmd", "-f", str(big)]
        ok = subprocess.run(cmd, timeout=20, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode == 0
        self.log(f"oversized retained command (5 MiB) published: {ok}")

    def update(self):
        v = (self.versions[-1] if self.versions else 1) + 1
        out = subprocess.run(
            [
                str(BIN),
                "bundle",
                "sign",
                str(self.archive),
                "--key",
                str(self.key),
                "--url",
                f"file://{self.archive}",
                "--version",
                str(v),
            ],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        ann = out.strip().splitlines()[-1]
        if self.pub("dermcam/fleet/model", ann, retain=True):
            self.versions.append(v)
            self.log(f"signed update version {v} announced")

    def kill(self):
        self.dev.send_signal(signal.SIGKILL)
        self.dev.wait()
        self.log(f"device SIGKILL (run {self.dev_runs})")
        time.sleep(1)
        self.start_device()

    # ---- the run --------------------------------------------------------------------------
    def run(self):
        key = self.w / "signing.key"
        key.unlink(missing_ok=True)
        self.key = key
        self.public = (
            subprocess.run(
                [str(BIN), "bundle", "keygen", "--out", str(key)], check=True, capture_output=True, text=True
            )
            .stdout.strip()
            .split()[-1]
        )
        self.archive = self.w / "update.tar"
        subprocess.run(
            [str(BIN), "bundle", "pack", str(BUNDLE), "--out", str(self.archive)], check=True, capture_output=True
        )
        (self.w / "received.txt").write_text("")
        threading.Thread(target=self.notify_listener, daemon=True).start()
        threading.Thread(target=self.rss_sampler, daemon=True).start()
        self.write_config()
        self.start_broker()
        self.start_device()
        if not self.wait(lambda: self.api_status(), 90):
            self.fail_fast("device never answered /api/v1/status")
        self.log("device up; chaos starts")
        self.oversized()
        last = {"update": -1e9, "kill": -1e9}
        end = time.time() + self.a.seconds
        faults = [("upload", 4), ("command", 4), ("broker_restart", 2), ("update", 1), ("kill", 1)]
        while time.time() < end:
            time.sleep(self.rng.uniform(1.5, 5))
            name = self.rng.choices([f for f, _ in faults], [w for _, w in faults])[0]
            # Updates and kills are spaced out so each gets time to finish (install, restart).
            if name in last:
                if time.time() - last[name] < (25 if name == "update" else 40):
                    name = "upload"
                else:
                    last[name] = time.time()
            getattr(self, name)()
        self.log("chaos over: broker up, waiting for the queue to drain")
        if self.broker is None:
            self.start_broker()
        return self.finish()

    def wait(self, pred, timeout, step=0.5):
        deadline = time.time() + timeout
        while time.time() < deadline:
            v = pred()
            if v:
                return v
            time.sleep(step)
        return None

    def fail_fast(self, why):
        print(f"soak: {why}", file=sys.stderr)
        self.teardown()
        sys.exit(1)

    def teardown(self):
        self.stop.set()
        for p in (self.dev, self.sub, self.broker):
            if p is not None and p.poll() is None:
                p.terminate()
                try:
                    p.wait(10)
                except subprocess.TimeoutExpired:
                    p.kill()

    def produced(self):
        ids = set()
        for f in self.w.glob("device-*.log"):
            for line in f.read_text(errors="replace").splitlines():
                if "fleet: queued result " in line:
                    ids.add(line.rsplit(" ", 1)[-1])
        return ids

    def received(self):
        res, status = [], []
        for line in (self.w / "received.txt").read_text(errors="replace").splitlines():
            topic, _, payload = line.partition(" ")
            try:
                v = json.loads(payload)
            except ValueError:
                continue
            (res if topic.endswith("/result") else status).append(v)
        return res, status

    def finish(self):
        checks = []
        drained = self.wait(
            lambda: (
                (s := self.received()[1])
                and s[-1].get("online")
                and s[-1].get("queue", {}).get("pending") == 0
                and self.produced() <= {r.get("id") for r in self.received()[0]}
            ),
            120,
            1,
        )
        time.sleep(3)  # a few more watchdog pings and status messages
        t_end = time.time() - self.t0
        api = self.api_status() or {}
        res, status = self.received()
        last_status = status[-1] if status else {}
        produced = self.produced()
        got = [r.get("id") for r in res]
        got_set = set(got)
        missing = produced - got_set
        dups = len(got) - len(got_set)
        checks.append(
            (
                "every queued result delivered",
                not missing and drained,
                f"{len(produced)} results queued on disk over {self.dev_runs} runs, {len(got_set)} distinct "
                f"received, {len(missing)} missing, {dups} duplicates (removable by id), "
                f"{len(got_set - produced)} received without a log line (killed between write and log)",
            )
        )
        stalled = [m for _, m in self.notify if m.startswith("STATUS=stalled")]
        pings = [t for t, m in self.notify if m == "WATCHDOG=1"]
        recent = [t for t in pings if t > t_end - 6]
        checks.append(
            (
                "every stage's heartbeat alive",
                not stalled and len(recent) >= 3,
                f"{len(pings)} watchdog pings, {len(recent)} in the last 6 s, stalls reported: {len(stalled)}"
                + (f" ({stalled[0]})" if stalled else ""),
            )
        )
        peak = max((mb for s in self.rss.values() for _, mb in s), default=0)
        # Flat after warm-up: the upload model instance is loaded at the first upload and a
        # model update holds two models for a moment, so compare from when both have happened.
        # Per process: a device restarted after SIGKILL starts small and loads its upload model
        # at its own first upload (CI once counted that as +42 MB of "growth"). A switch's
        # moment with two models is no leak either: the medians of the first and last 20 s are
        # compared, so only a risen floor counts.
        firsts = [next((t for t, e in self.events if e.startswith(k)), None) for k in ("upload", "signed update")]
        warm0 = max((t for t in firsts if t is not None), default=0) + 10
        growth = []
        for s in self.rss.values():
            if not s:
                continue
            # Its own first upload (its start when it had none).
            own = next((t for t, e in self.events if e.startswith("upload") and t >= s[0][0]), s[0][0])
            warm = max(warm0, own + 10)
            s = [(t, mb) for t, mb in s if t >= warm]
            if s and s[-1][0] - s[0][0] >= 40:
                early = [mb for t, mb in s if t <= s[0][0] + 20]
                late = [mb for t, mb in s if t >= s[-1][0] - 20]
                base = statistics.median(early)
                growth.append((warm, statistics.median(late) - base, max(late) - base))
        checks.append(
            (
                "RSS bounded and flat",
                peak <= self.a.max_rss_mb and all(g <= self.a.max_growth_mb for _, g, _ in growth),
                f"peak {peak:.0f} MB (limit {self.a.max_rss_mb}); growth (median of the last 20 s - of the first 20 s after "
                "warm-up) of each process alive >= 40 s after its warm-up: "
                + (
                    ", ".join(f"{g:+.1f} MB (from {w:.0f} s; last 20 s peak {p:+.1f})" for w, g, p in growth)
                    or "none that long"
                )
                + f" (limit +{self.a.max_growth_mb})",
            )
        )
        u = self.uploads
        checks.append(
            (
                "uploads answered",
                not u["bad"],
                f"{u['ok']} x 200, {u['busy']} x 503 (busy), {u['down']} refused while the device restarted, "
                f"bad: {u['bad'] or 'none'}",
            )
        )
        mu = last_status.get("model_update") or {}
        want_v = self.versions[-1] if self.versions else None
        truthful = (
            last_status.get("online") is True
            and last_status.get("queue", {}).get("pending") == 0
            and (last_status.get("model") or {}).get("name") == api.get("model")
            and (want_v is None or (mu.get("version") == want_v and mu.get("state") == "switched"))
        )
        checks.append(
            (
                "status truthful",
                truthful,
                f"retained status: online {last_status.get('online')}, queue pending "
                f"{last_status.get('queue', {}).get('pending')}, model {(last_status.get('model') or {}).get('name')} "
                f"(API: {api.get('model')}), model_update {mu.get('state')} v{mu.get('version')} "
                f"(last announced: v{want_v}), reconnects {last_status.get('queue', {}).get('reconnects')}",
            )
        )
        # Clean stop: exit 0 and the goodbye.
        self.dev.terminate()
        try:
            rc = self.dev.wait(30)
        except subprocess.TimeoutExpired:
            rc = "hung"
        time.sleep(1)
        bye = self.received()[1][-1:] or [{}]
        checks.append(
            (
                "clean stop",
                rc == 0 and bye[0].get("online") is False,
                f"SIGTERM -> exit {rc}; last status online={bye[0].get('online')} reason={bye[0].get('reason')}",
            )
        )
        self.teardown()
        counts = {}
        for _, e in self.events:
            k = e.split(" ")[0] if not e.startswith("broker") else "broker restart"
            counts[k] = counts.get(k, 0) + 1
        lines = [
            "# Chaos soak",
            "",
            f"`python3 tests/soak/soak.py --seconds {self.a.seconds} --seed {self.a.seed}`: "
            f"{t_end:.0f} s, faults: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())),
            "",
            "| invariant | result | measured |",
            "|---|---|---|",
        ] + [f"| {n} | {'pass' if ok else '**FAIL**'} | {m} |" for n, ok, m in checks]
        Path(self.a.report).parent.mkdir(parents=True, exist_ok=True)
        Path(self.a.report).write_text("\n".join(lines) + "\n")
        for n, ok, m in checks:
            print(f"[{'PASS' if ok else 'FAIL'}] {n}: {m}")
        return all(ok for _, ok, _ in checks)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=int, default=int(os.environ.get("SOAK_SECONDS", 120)))
    ap.add_argument("--seed", type=int, default=int(os.environ.get("SOAK_SEED", 1)))
    ap.add_argument("--max-rss-mb", type=float, default=400)
    ap.add_argument("--max-growth-mb", type=float, default=30)
    ap.add_argument("--work", default=str(ROOT / "target/soak"))
    ap.add_argument("--report", default=str(ROOT / "target/soak.md"))
    ap.add_argument("--mosquitto", default="/usr/sbin/mosquitto")
    a = ap.parse_args()
    if not BIN.exists():
        sys.exit("soak: build first: cargo build --release")
    import shutil

    shutil.rmtree(a.work, ignore_errors=True)
    s = Soak(a)
    try:
        ok = s.run()
    finally:
        s.teardown()
    print(f"report: {a.report}")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
