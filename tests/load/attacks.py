"""Hostile-client scenarios for tests/load/attacks.sh (stdlib only; wrk for the frame flood).

Measures the live pipeline's inference rate before and during each scenario, the server's RSS,
and what legitimate clients experience; writes a Markdown report and exits 1 on a failed
criterion. See attacks.sh for the scenarios and pass criteria.
"""

import argparse
import asyncio
import datetime
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

p = argparse.ArgumentParser()
for name, typ in [
    ("pid", int),
    ("port", int),
    ("scenario", str),
    ("duration", int),
    ("max-rss-mb", int),
    ("max-drop", float),
    ("slow-idle", int),
    ("slow-half", int),
    ("slow-uploaders", int),
    ("slow-nonreaders", int),
    ("flood-connections", int),
    ("image", str),
    ("report", str),
]:
    p.add_argument("--" + name, type=typ, required=True)
a = p.parse_args()
BASE = f"http://127.0.0.1:{a.port}"
IMAGE = open(a.image, "rb").read()


def get(path, timeout=5):
    # The measuring client shares 127.0.0.1 with the attackers, so for a moment after a
    # scenario ends the server's per-client share can still be full of their closing
    # connections and it resets ours by design: retry for up to ~3 s.
    for attempt in range(12):
        try:
            with urllib.request.urlopen(BASE + path, timeout=timeout) as r:
                return r.read()
        except (ConnectionResetError, ConnectionAbortedError, urllib.error.URLError) as e:
            if isinstance(e, urllib.error.HTTPError) or attempt == 11:
                raise
            time.sleep(0.25)


def counters():
    return json.loads(get("/api/v1/status"))["counters"]


def metric(name):
    for line in get("/metrics").decode().splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return 0.0


def proc_mb(field):
    for line in open(f"/proc/{a.pid}/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return 0.0


def alive():
    try:
        os.kill(a.pid, 0)
        return True
    except OSError:
        return False


class Sampler:
    """Peak RSS (sampled) and pipeline inference rate over a window."""

    def __init__(self):
        self.peak = proc_mb("VmRSS")
        self.stop = False
        self.t = threading.Thread(target=self.run, daemon=True)

    def run(self):
        while not self.stop and alive():
            self.peak = max(self.peak, proc_mb("VmRSS"))
            time.sleep(0.5)

    def __enter__(self):
        self.t.start()
        self.c0, self.t0 = counters(), time.time()
        return self

    def __exit__(self, *exc):
        self.c1, self.t1 = counters(), time.time()
        self.stop = True
        self.t.join()

    def rate(self):
        return (self.c1["inferences"] - self.c0["inferences"]) / (self.t1 - self.t0)

    def frames(self):
        return self.c1["frames"] - self.c0["frames"]


def baseline(secs=10):
    c0, t0 = counters(), time.time()
    time.sleep(secs)
    c1, t1 = counters(), time.time()
    return (c1["inferences"] - c0["inferences"]) / (t1 - t0)


# ---- slow clients -------------------------------------------------------------------------


async def attacker(kind, deadline, stats):
    while time.time() < deadline:
        try:
            r, w = await asyncio.open_connection("127.0.0.1", a.port, local_addr=("127.0.0.2", 0))
        except OSError:
            stats["connect_errors"] += 1
            await asyncio.sleep(0.2)
            continue
        stats["connections"] += 1
        try:
            if kind == "half":
                w.write(b"GET /heal")
            elif kind == "upload":
                w.write(
                    b"POST /api/v1/classify HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                    b"Content-Type: image/jpeg\r\nContent-Length: 5000000\r\n\r\n" + IMAGE[:64]
                )
            await w.drain()
            t0 = time.time()
            while time.time() < deadline:
                if kind == "upload":
                    try:
                        w.write(b"\0")
                        await w.drain()
                    except (ConnectionError, OSError):
                        break
                try:
                    data = await asyncio.wait_for(r.read(4096), timeout=1.0)
                    if not data:
                        break
                    if kind == "upload" and data.startswith(b"HTTP/1.1 408"):
                        stats["upload_408"] += 1
                except TimeoutError:
                    continue
                except (ConnectionError, OSError):
                    break
            stats["held_s"].append(time.time() - t0)
        finally:
            w.close()
        # A short pause before reconnecting keeps this Python client from taking the CPU the
        # server needs (a real attacker elsewhere on the LAN costs the device nothing).
        await asyncio.sleep(0.2)


async def nonreader(i, deadline, stats):
    """Pipelines requests for the style sheet and never reads a byte of the answers (a tiny
    receive window), so the server's writes block; held until the server drops it."""
    import socket

    loop = asyncio.get_running_loop()
    batch = b"GET /static/style.css HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n" * 500
    while time.time() < deadline:
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        s.bind((f"127.0.0.{3 + i % 8}", 0))
        s.setblocking(False)
        try:
            await loop.sock_connect(s, ("127.0.0.1", a.port))
        except OSError:
            stats["connect_errors"] += 1
            s.close()
            await asyncio.sleep(0.2)
            continue
        stats["nonreader_connections"] += 1
        t0 = time.time()
        try:
            while time.time() < deadline:
                await asyncio.wait_for(loop.sock_sendall(s, batch), timeout=max(0.1, deadline - time.time()))
        except (OSError, TimeoutError):
            pass
        stats["nonreader_held_s"].append(time.time() - t0)
        s.close()
        await asyncio.sleep(0.2)


async def request(raw, timeout):
    t0 = time.time()
    try:
        r, w = await asyncio.open_connection("127.0.0.1", a.port)
        w.write(raw)
        await w.drain()
        data = await asyncio.wait_for(r.read(), timeout=timeout)
        w.close()
        line = data.split(b"\r\n", 1)[0].decode(errors="replace")
        return line.split(" ")[1] if " " in line else "none", time.time() - t0
    except (TimeoutError, OSError) as e:
        return type(e).__name__, time.time() - t0


async def legit(deadline, stats):
    health = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    upload = (
        b"POST /api/v1/classify HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: image/jpeg\r\n"
        + f"Content-Length: {len(IMAGE)}\r\nConnection: close\r\n\r\n".encode()
        + IMAGE
    )
    n = 0
    while time.time() < deadline:
        st, dt = await request(health, 5)
        stats["health"].append((st, dt))
        if n % 2 == 0:
            st, dt = await request(upload, 30)
            stats["uploads"].append((st, dt))
        n += 1
        await asyncio.sleep(max(0.0, 1.0 - dt))


async def slow_scenario(duration):
    stats = {
        "connections": 0,
        "connect_errors": 0,
        "upload_408": 0,
        "held_s": [],
        "health": [],
        "uploads": [],
        "nonreader_connections": 0,
        "nonreader_held_s": [],
    }
    deadline = time.time() + duration
    tasks = [attacker("idle", deadline, stats) for _ in range(a.slow_idle)]
    tasks += [attacker("half", deadline, stats) for _ in range(a.slow_half)]
    tasks += [attacker("upload", deadline, stats) for _ in range(a.slow_uploaders)]
    tasks += [nonreader(i, deadline, stats) for i in range(a.slow_nonreaders)]
    tasks.append(legit(deadline, stats))
    await asyncio.gather(*tasks)
    return stats


def pct(v, q):
    v = sorted(v)
    return v[min(len(v) - 1, int(q / 100 * len(v)))] if v else 0.0


lines, failures = [], []
base = baseline()
rss0 = proc_mb("VmRSS")
print(f"pipeline alone: {base:.2f} inferences/s, RSS {rss0:.0f} MB", flush=True)
head = (
    f"Generated by `bash tests/load/attacks.sh` on {datetime.date.today()} "
    f"({platform.machine()}, {os.cpu_count()} cores), default web limits (max_connections 64, "
    f"8 per client address, header/idle timeout 5 s, write progress 10 s, body timeout 30 s, 2 classifications + "
    f"queue 8), live pipeline on a 640x480 synthetic stream at up to 15 fps; pipeline alone "
    f"{base:.2f} inferences/s, server RSS {rss0:.0f} MB."
)
lines += ["# Hostile-client scenarios", "", head, ""]

if a.scenario in ("slow", "all"):
    with Sampler() as s:
        st = asyncio.run(slow_scenario(a.duration))
    drop = (base - s.rate()) / base * 100 if base else 0
    h_ok = [dt for code, dt in st["health"] if code == "200"]
    h_all = len(st["health"])
    up = st["uploads"]
    up_ok = [dt for code, dt in up if code == "200"]
    up_codes = {}
    for code, _ in up:
        up_codes[code] = up_codes.get(code, 0) + 1
    lines += [
        "## Slow clients",
        "",
        f"{a.slow_idle} connections sending nothing, {a.slow_half} sending half a request line and "
        f"{a.slow_uploaders} declaring a 5 MB upload and sending 1 byte/s, all from 127.0.0.2 and "
        f"reconnecting (after 200 ms) whenever the server closes them, for {a.duration} s; a "
        f"legitimate client on 127.0.0.1 asks /healthz every second and uploads `{a.image}` every 2 s.",
        "",
        "| figure | value |",
        "|---|---|",
        f"| attacker connections opened / connect errors | {st['connections']} / {st['connect_errors']} |",
        f"| time an attacker connection was held, p50 / max | {pct(st['held_s'], 50):.1f} / {max(st['held_s'] or [0]):.1f} s |",
        f"| slow uploads cut off with 408 | {st['upload_408']} |",
        f"| never-reading connections ({a.slow_nonreaders} at a time from 127.0.0.3-10) opened / held p50 / max | "
        f"{st['nonreader_connections']} / {pct(st['nonreader_held_s'], 50):.1f} / {max(st['nonreader_held_s'] or [0]):.1f} s |",
        f"| legitimate /healthz answered | {len(h_ok)} of {h_all}, p50 / max {pct(h_ok, 50) * 1000:.0f} / {max(h_ok or [0]) * 1000:.0f} ms |",
        f"| legitimate uploads classified (200) | {len(up_ok)} of {len(up)} ({up_codes}), p50 {pct(up_ok, 50) * 1000:.0f} ms |",
        f"| server RSS before / peak (sampled) | {rss0:.0f} / {s.peak:.0f} MB |",
        f"| live pipeline inferences/s alone / under attack | {base:.2f} / {s.rate():.2f} ({-drop:+.1f} %) |",
        "",
    ]
    if len(h_ok) < h_all or (h_ok and max(h_ok) > 2.0):
        failures.append("slow: /healthz not always answered within 2 s")
    if len(up_ok) < 0.9 * max(len(up), 1):
        failures.append("slow: fewer than 90 % of legitimate uploads classified")
    if drop > a.max_drop:
        failures.append(f"slow: pipeline slowed by {drop:.1f} %")

if a.scenario in ("frames", "all"):
    if not shutil.which("wrk"):
        sys.exit("frame flood needs wrk (apt-get install wrk)")
    e0 = metric("dermcam_frame_encodes_total")
    with Sampler() as s:
        out = subprocess.run(
            [
                "nice",
                "-n",
                "19",
                "wrk",
                "-t2",
                f"-c{a.flood_connections}",
                f"-d{a.duration}s",
                "--timeout",
                "10s",
                "--latency",
                BASE + "/api/v1/frame.jpg",
            ],
            capture_output=True,
            text=True,
        ).stdout
    e1 = metric("dermcam_frame_encodes_total")
    drop = (base - s.rate()) / base * 100 if base else 0
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    lat = dict(re.findall(r"\s(50|99)%\s+([\d.]+\w+)", out))
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    encodes = e1 - e0
    lines += [
        "## Frame flood",
        "",
        f"{a.flood_connections} wrk connections (nice 19) GET `/api/v1/frame.jpg` as fast as they can for "
        f"{a.duration} s.",
        "",
        "| figure | value |",
        "|---|---|",
        f"| responses/s | {rps:.0f} (non-2xx: {non2xx.group(1) if non2xx else 0}) |",
        f"| latency p50 / p99 | {lat.get('50', '?')} / {lat.get('99', '?')} |",
        f"| JPEG encodes / frames published in the window | {encodes:.0f} / {s.frames()} |",
        f"| server RSS before / peak (sampled) | {rss0:.0f} / {s.peak:.0f} MB |",
        f"| live pipeline inferences/s alone / under flood | {base:.2f} / {s.rate():.2f} ({-drop:+.1f} %) |",
        "",
    ]
    if drop > a.max_drop:
        failures.append(f"frames: pipeline slowed by {drop:.1f} %")
    if encodes > s.frames() + 1:
        failures.append("frames: more JPEG encodes than frames")

if a.scenario in ("bombs", "all"):
    # 16-bit RGBA PNG just under max_pixels (40 M): 6300 x 6300, a few hundred KB on the wire.
    import struct
    import zlib
    from concurrent.futures import ThreadPoolExecutor

    w = h = 6300

    def chunk(t, d):
        return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d) & 0xFFFFFFFF)

    row = b"\0" + bytes(w * 8)
    comp = zlib.compressobj(6)
    idat = b"".join(comp.compress(row) for _ in range(h)) + comp.flush()
    bomb = (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 16, 6, 0, 0, 0))
        + chunk(b"IDAT", idat)
        + chunk(b"IEND", b"")
    )

    def post(_):
        req = urllib.request.Request(
            BASE + "/api/v1/classify", data=bomb, method="POST", headers={"Content-Type": "image/png"}
        )
        try:
            with urllib.request.urlopen(req, timeout=120) as r:
                return r.status
        except urllib.error.HTTPError as e:
            return e.code
        except OSError as e:
            return type(e).__name__

    hwm0 = proc_mb("VmHWM")
    with Sampler() as s, ThreadPoolExecutor(10) as ex:
        t0 = time.time()
        codes = list(ex.map(post, range(10)))
        secs = time.time() - t0
    time.sleep(2)
    after = proc_mb("VmRSS")
    hwm_b = proc_mb("VmHWM")
    drop = (base - s.rate()) / base * 100 if base else 0
    lines += [
        "## Decode bombs",
        "",
        f"10 concurrent uploads of a {len(bomb) // 1024} KB 16-bit RGBA PNG of {w} x {h} = "
        f"{w * h / 1e6:.1f} M pixels (just under max_pixels): RGBA16 alone would be "
        f"{w * h * 8 / 2**20:.0f} MB each.",
        "",
        "| figure | value |",
        "|---|---|",
        f"| statuses | {sorted(codes, key=str)} in {secs:.1f} s |",
        f"| server VmHWM before / after the bombs | {hwm0:.0f} / {hwm_b:.0f} MB |",
        f"| server RSS 2 s after the last response | {after:.0f} MB |",
        f"| live pipeline inferences/s alone / during | {base:.2f} / {s.rate():.2f} ({-drop:+.1f} %) |",
        "",
    ]
    if hwm_b > a.max_rss_mb:
        failures.append(f"bombs: VmHWM {hwm_b:.0f} MB")

hwm = proc_mb("VmHWM")
if not alive():
    failures.append("server died")
if hwm > a.max_rss_mb:
    failures.append(f"VmHWM {hwm:.0f} MB over {a.max_rss_mb} MB")
try:
    get("/healthz")
except OSError:
    failures.append("server not answering afterwards")
lines.append(f"Server VmHWM over the whole run: {hwm:.0f} MB (bound {a.max_rss_mb} MB).")
lines.append("")
limits = f"(limits: pipeline slowdown <= {a.max_drop} %, peak RSS <= {a.max_rss_mb} MB)"
lines.append("Result: " + ("PASS " if not failures else "FAIL: " + "; ".join(failures) + " ") + limits)
open(a.report, "w").write("\n".join(lines) + "\n")
print("\n".join(lines))
sys.exit(1 if failures else 0)
