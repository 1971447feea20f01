#!/usr/bin/env bash
# Load test against the real server on loopback: CONNECTIONS concurrent uploads of a real JPEG
# to POST /api/v1/classify for DURATION seconds (wrk), while the live pipeline classifies a
# camera-sized synthetic stream. Records throughput, latency percentiles, the share of 503s,
# server peak RSS and the pipeline's inference rate before and during the load; fails if the
# server dies, answers 5xx other than 503, grows past MAX_RSS_MB, or the pipeline rate drops
# by more than 20 %. Writes tests/load/report-{impatient,polite}.md (REPORT=path to change).
set -euo pipefail
cd "$(dirname "$0")/../.."
CONNECTIONS=${CONNECTIONS:-200}
DURATION=${DURATION:-60}
MAX_RSS_MB=${MAX_RSS_MB:-300}
PORT=${PORT:-18089}
REPORT=${REPORT:-tests/load/report-$([ "${POLITE:-0}" = 1 ] && echo polite || echo impatient).md}
IMAGE=${IMAGE:-tests/samples/melanoma__ISIC_0000154.jpg}
# POLITE=1: clients wait Retry-After seconds after a 503 (browsers, the upload page); 0: they
# retry at once (worst case for the server).
POLITE=${POLITE:-0}
# The live pipeline may slow down by at most this much (percent) under load.
MAX_DROP=${MAX_DROP:-20}
# web.nice / web.inference_threads of the server (defaults as shipped). WEB_NICE=0
# WEB_THREADS=0 makes uploads share the pipeline's priority and model: the comparison case.
WEB_NICE=${WEB_NICE:-10}
WEB_THREADS=${WEB_THREADS:-1}
command -v wrk > /dev/null || { echo "needs wrk (apt-get install wrk)" >&2; exit 1; }
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
nice = $WEB_NICE
inference_threads = $WEB_THREADS

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
# The monitor is another client (its own source address, 127.0.0.2): the server caps the
# connections one address may hold, and the 200 load connections all come from 127.0.0.1.
inferences() {
    for _ in 1 2 3 4 5; do
        n=$(curl -sf --max-time 5 --interface 127.0.0.2 "http://127.0.0.1:$PORT/api/v1/status" \
            | python3 -c 'import json,sys; print(json.load(sys.stdin)["counters"]["inferences"])' 2> /dev/null) \
            && { echo "$n"; return 0; }
        sleep 0.5
    done
    echo "FAIL: /api/v1/status unanswered" >&2
    return 1
}
rss_mb() { awk '/VmRSS/ {printf "%.0f", $2/1024}' "/proc/$pid/status"; }
hwm_mb() { awk '/VmHWM/ {printf "%.0f", $2/1024}' "/proc/$pid/status"; }

sleep 3 # warm-up
base_secs=10
i0=$(inferences); sleep $base_secs; i1=$(inferences)
base_rate=$(python3 -c "print(round(($i1 - $i0) / $base_secs, 2))")
rss_before=$(rss_mb)
echo "pipeline alone: $base_rate inferences/s, RSS $rss_before MB"

# Sample the pipeline rate and RSS through the load (skipping the first 5 s of ramp-up).
(
    sleep 5
    j0=$(inferences); t0=$(date +%s.%N)
    sleep $((DURATION - 10))
    j1=$(inferences); t1=$(date +%s.%N)
    python3 -c "print(round(($j1 - $j0) / ($t1 - $t0), 2))" > "$tmp/load_rate"
) &
sampler=$!
(
    peak=0
    while kill -0 "$pid" 2> /dev/null; do
        r=$(rss_mb); [ "${r:-0}" -gt "$peak" ] && peak=$r
        echo "$peak" > "$tmp/peak_rss"; sleep 0.5
    done
) &
rss_watch=$!
# wrk runs at the lowest priority: on a device the clients are other machines, here they share
# the server's 2 cores, and their CPU time is not the server's.
IMAGE="$IMAGE" POLITE="$POLITE" nice -n 19 wrk -t2 -c"$CONNECTIONS" -d"${DURATION}s" --timeout 30s --latency \
    -s tests/load/upload.lua "http://127.0.0.1:$PORT/api/v1/classify" | tee "$tmp/wrk.out"
wait "$sampler"
kill "$rss_watch" 2> /dev/null || true
kill -0 "$pid" || { echo "FAIL: server died under load"; cat "$tmp/server.err"; exit 1; }
curl -sf --max-time 10 "http://127.0.0.1:$PORT/healthz" > /dev/null || { echo "FAIL: server not answering after load"; exit 1; }
after_rate=$(cat "$tmp/load_rate")
peak_rss=$(cat "$tmp/peak_rss")
hwm=$(hwm_mb)
metrics=$(curl -sf "http://127.0.0.1:$PORT/metrics")
python3 - "$tmp/wrk.out" "$base_rate" "$after_rate" "$peak_rss" "$hwm" "$rss_before" \
    "$CONNECTIONS" "$DURATION" "$MAX_RSS_MB" "$REPORT" "$IMAGE" "$POLITE" "$MAX_DROP" \
    "$WEB_NICE" "$WEB_THREADS" <<'PY'
import re, sys, platform, os, datetime
(wrk, base, load, peak, hwm, before, conns, dur, max_rss, report, image, polite, max_drop,
 nice, threads) = sys.argv[1:]
text = open(wrk).read()
status = dict(map(int, kv.split("=")) for kv in re.search(r"STATUS(.*)", text).group(1).split())
lat = dict((k, int(v)) for k, v in re.findall(r"(p50|p90|p99|max)=(\d+)", text))
summ = dict((k, int(v)) for k, v in re.findall(r"(\w+)=(\d+)", re.search(r"SUMMARY(.*)", text).group(1)))
total = sum(status.values())
ok = status.get(200, 0)
busy = status.get(503, 0)
other = {s: n for s, n in status.items() if s not in (200, 503)}
secs = summ["duration_us"] / 1e6
base, load = float(base), float(load)
drop = (base - load) / base * 100 if base > 0 else 0
lines = [
    "## " + ("Polite clients (honour Retry-After)" if polite == "1" else "Impatient clients (retry at once)"),
    "",
    f"Generated by `bash tests/load/run.sh` on {datetime.date.today()} ({platform.machine()}, "
    f"{os.cpu_count()} cores): {conns} concurrent connections (wrk) posting `{image}` "
    f"to `POST /api/v1/classify` for {dur} s, default web limits (2 classifications at a time, "
    f"queue 8, web threads at nice {nice}, upload inference threads {threads} (0 = the pipeline's "
    f"own model)), while the live pipeline classifies a 640x480 synthetic "
    f"stream at up to 15 fps. Clients "
    + ("honour Retry-After after a 503." if polite == "1" else "retry at once after a 503 (worst case).")
    + " wrk runs at nice 19 on the same 2 cores.",
    "",
    "| figure | value |",
    "|---|---|",
    f"| responses | {total} in {secs:.1f} s ({total / secs:.1f}/s) |",
    f"| classified (200) | {ok} ({ok / secs:.1f}/s) |",
    f"| busy (503 + Retry-After) | {busy} ({busy / max(total, 1) * 100:.1f} %) |",
    f"| other statuses | {other or 'none'} |",
    f"| socket errors (connect/read/timeout) | {summ['errors_connect']}/{summ['errors_read']}/{summ['errors_timeout']} |",
    f"| latency p50 / p90 / p99 / max | {lat['p50']/1000:.1f} / {lat['p90']/1000:.1f} / {lat['p99']/1000:.1f} / {lat['max']/1000:.1f} ms |",
    f"| server RSS before / peak during (sampled) / VmHWM | {before} / {peak} / {hwm} MB (bound {max_rss} MB) |",
    f"| live pipeline inferences/s alone / under load | {base:.2f} / {load:.2f} ({-drop:+.1f} %) |",
    "",
]
verdict = []
if other:
    verdict.append(f"unexpected statuses {other}")
if int(hwm) > int(max_rss):
    verdict.append(f"peak RSS {hwm} MB over the {max_rss} MB bound")
if drop > float(max_drop):
    verdict.append(f"live pipeline slowed by {drop:.1f} % (> {max_drop} %)")
if ok == 0:
    verdict.append("nothing classified")
limits = f"(limits: pipeline slowdown <= {max_drop} %, peak RSS <= {max_rss} MB)"
lines.append("Result: " + ("PASS " if not verdict else "FAIL: " + "; ".join(verdict) + " ") + limits)
open(report, "w").write("\n".join(lines) + "\n")
print("\n".join(lines))
sys.exit(1 if verdict else 0)
PY
