#!/usr/bin/env bash
# Hostile-client load scenarios against the real server on loopback, while the live pipeline
# classifies a camera-sized synthetic stream (same set-up as run.sh):
#
#   SCENARIO=slow    slow clients: SLOW_IDLE connections that send nothing, SLOW_HALF that send
#                    half a request line, SLOW_UPLOADERS that declare a 5 MB upload and send 1
#                    byte a second (attackers from 127.0.0.2, reconnecting whenever closed),
#                    and SLOW_NONREADERS from 127.0.0.3-10 that pipeline requests and never read
#                    the responses,
#                    while a legitimate client (127.0.0.1) checks /healthz every second and
#                    uploads a real JPEG every 2 s.
#                    Pass: every /healthz answered within 2 s, >= 90 % of the legitimate uploads
#                    classified (200), server alive, RSS bound, pipeline rate drop <= MAX_DROP.
#   SCENARIO=frames  frame flood: FLOOD_CONNECTIONS wrk connections GET /api/v1/frame.jpg as
#                    fast as they can. Pass: pipeline rate drop <= MAX_DROP, JPEG encodes <=
#                    frames published, server alive, RSS bound.
#   SCENARIO=bombs   decode bombs: 10 concurrent uploads of a 16-bit RGBA PNG just under
#                    max_pixels. Pass: VmHWM <= MAX_RSS_MB (default 500 MB: baseline + 2 x 160 MB decode budget).
#   SCENARIO=all     all three (default).
#
# DURATION seconds each (default 40). Writes tests/load/report-attacks.md (REPORT=path).
set -euo pipefail
cd "$(dirname "$0")/../.."
SCENARIO=${SCENARIO:-all}
DURATION=${DURATION:-40}
PORT=${PORT:-18090}
MAX_RSS_MB=${MAX_RSS_MB:-500}
MAX_DROP=${MAX_DROP:-20}
SLOW_IDLE=${SLOW_IDLE:-300}
SLOW_HALF=${SLOW_HALF:-100}
SLOW_UPLOADERS=${SLOW_UPLOADERS:-20}
SLOW_NONREADERS=${SLOW_NONREADERS:-48}
FLOOD_CONNECTIONS=${FLOOD_CONNECTIONS:-50}
REPORT=${REPORT:-tests/load/report-attacks.md}
IMAGE=${IMAGE:-tests/samples/melanoma__ISIC_0000154.jpg}
[ -x target/release/dermcam ] || cargo build --release
tmp=$(mktemp -d)
cat > "$tmp/config.toml" <<TOML
[source]
kind = "synthetic"
width = 640
height = 480
fps = 15

[screen]
kind = "png"
path = "$tmp/screen.png"
width = 320
height = 240

[web]
bind = "127.0.0.1:$PORT"

[button]
stdin = false
TOML
target/release/dermcam run --config "$tmp/config.toml" > "$tmp/server.out" 2> "$tmp/server.err" &
pid=$!
# Wait for the server to exit before removing its folder: it may still be writing into it.
cleanup() { kill "$pid" 2> /dev/null || true; wait "$pid" 2> /dev/null || true; rm -rf "$tmp" || true; }
trap cleanup EXIT
for _ in $(seq 100); do
    curl -sf "http://127.0.0.1:$PORT/healthz" > /dev/null && break
    sleep 0.1
done
python3 tests/load/attacks.py --pid "$pid" --port "$PORT" --scenario "$SCENARIO" \
    --duration "$DURATION" --max-rss-mb "$MAX_RSS_MB" --max-drop "$MAX_DROP" \
    --slow-idle "$SLOW_IDLE" --slow-half "$SLOW_HALF" --slow-uploaders "$SLOW_UPLOADERS" \
    --slow-nonreaders "$SLOW_NONREADERS" \
    --flood-connections "$FLOOD_CONNECTIONS" --image "$IMAGE" --report "$REPORT"
