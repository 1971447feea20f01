"""Memory figures quoted in the README (run from the repository root, release build first).

  python3 tests/soak/memory.py reloads [--n 12]   RSS of `dermcam run` (fleet + web, Mosquitto)
                                                   after each of N `reload-model` commands
  python3 tests/soak/memory.py decode              peak RSS of `dermcam classify` on large
                                                   progressive RGB / CMYK and baseline JPEGs

Environment variables pass through, so `MALLOC_MMAP_THRESHOLD_=262144 MALLOC_TRIM_THRESHOLD_=262144`
reproduces the fixed-threshold alternative the README compares with.
"""

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BIN = ROOT / "target/release/dermcam"
BUNDLE = ROOT / "models/effl0-v2"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_mb(pid):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS"):
            return int(line.split()[1]) / 1024
    return 0.0


def reloads(n):
    w = Path(tempfile.mkdtemp(prefix="dermcam-memory-"))
    mqtt, web = free_port(), free_port()
    (w / "m.conf").write_text(f"listener {mqtt} 127.0.0.1\nallow_anonymous true\n")
    broker = subprocess.Popen(["mosquitto", "-c", str(w / "m.conf")], stderr=subprocess.DEVNULL)
    key = subprocess.run(
        [str(BIN), "bundle", "keygen", "--out", str(w / "k")], check=True, capture_output=True, text=True
    ).stdout.split()[-1]
    (w / "c.toml").write_text(f"""
[source]
kind = "images"
path = "{ROOT}/tests/samples"
interval_ms = 250
[screen]
kind = "png"
path = "{w}/screen.png"
width = 320
height = 240
[model]
path = "{BUNDLE}"
threads = 1
[web]
bind = "127.0.0.1:{web}"
[fleet]
broker = "mqtt://127.0.0.1:{mqtt}"
device_id = "memory"
publish = "all"
max_rate_hz = 4
queue_dir = "{w}/queue"
[fleet.updates]
public_key = "{key}"
models_dir = "{w}/models"
""")
    dev = subprocess.Popen(
        [str(BIN), "run", "--config", str(w / "c.toml")], stdout=subprocess.DEVNULL, stderr=open(w / "dev.log", "w")
    )
    try:
        time.sleep(8)
        print(f"start: {rss_mb(dev.pid):.0f} MB", flush=True)
        for i in range(n):
            topic = "dermcam/memory/cmd"
            subprocess.run(["mosquitto_pub", "-p", str(mqtt), "-q", "1", "-t", topic, "-m", "reload-model"], check=True)
            time.sleep(4)
            print(f"after reload {i + 1}: {rss_mb(dev.pid):.0f} MB", flush=True)
    finally:
        dev.terminate()
        dev.wait()
        broker.terminate()


CASES = [
    ("progressive RGB", (5000, 3500), "RGB", True),
    ("progressive CMYK", (3800, 2900), "CMYK", True),
    ("baseline RGB", (6000, 4000), "RGB", False),
    ("progressive RGB", (6000, 4000), "RGB", True),
    ("progressive CMYK", (6000, 4000), "CMYK", True),
]


def case_path(w, name, width):
    return w / f"{name.replace(' ', '-')}-{width}.jpg"


def make_images(w):
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for name, (width, height), mode, progressive in CASES:
        small = rng.integers(0, 255, (height // 50, width // 50, 3), dtype=np.uint8)
        img = Image.fromarray(small).resize((width, height), Image.BILINEAR).convert(mode)
        img.save(case_path(w, name, width), quality=85, progressive=progressive)


def decode():
    w = Path(tempfile.mkdtemp(prefix="dermcam-decode-"))
    # Made in another process: a child forked from one holding the images would count them.
    subprocess.run([sys.executable, __file__, "make-images", str(w)], check=True)
    for name, (width, height), _, _ in CASES:
        path = case_path(w, name, width)
        with open(w / "out.json", "w+") as f:
            p = subprocess.Popen(
                [str(BIN), "classify", "--json", "--no-gates", "--model", str(BUNDLE), str(path)],
                stdout=f,
                stderr=subprocess.DEVNULL,
            )
            _, _, usage = os.wait4(p.pid, 0)  # this child's own peak RSS
            p.returncode = 0
            f.seek(0)
            out = f.read()
        verdict = "refused" if '"error"' in out else "classified"
        size = os.path.getsize(path) / 1e6
        print(f"{name} {width}x{height} ({size:.1f} MB file): {verdict}, peak RSS {usage.ru_maxrss / 1024:.0f} MB")


def main():
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("reloads")
    r.add_argument("--n", type=int, default=12)
    sub.add_parser("decode")
    sub.add_parser("make-images").add_argument("dir")
    a = ap.parse_args()
    if a.cmd == "reloads":
        reloads(a.n)
    elif a.cmd == "decode":
        decode()
    else:
        make_images(Path(a.dir))


if __name__ == "__main__":
    main()
