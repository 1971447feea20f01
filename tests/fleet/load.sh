#!/usr/bin/env bash
# Fleet load figures against a local mosquitto (Debian: mosquitto mosquitto-clients):
#  1. fleet off vs on for one device, side by side, alternated ROUNDS times: live pipeline rate
#     and peak RSS (the goals: rate within 3 %, extra RSS <= 10 MB);
#  2. DEVICES `dermcam run` processes (slideshow, Lite0 on one thread, every live result
#     published at up to 2/s) on one broker: messages/s received, duplicates, broker CPU;
#  3. a model update announced to UPDATE_DEVICES devices: every one reports the new model; then
#     a broken bundle: every one stays on it.
# Writes a Markdown report to $REPORT (default target/fleet-load.md).
# Usage: bash tests/fleet/load.sh   (env: SECONDS_AB, ROUNDS, DEVICES, SECONDS_FLEET, UPDATE_DEVICES)
set -euo pipefail
cd "$(dirname "$0")/../.."
SECONDS_AB=${SECONDS_AB:-20}
ROUNDS=${ROUNDS:-2}
DEVICES=${DEVICES:-50}
SECONDS_FLEET=${SECONDS_FLEET:-30}
UPDATE_DEVICES=${UPDATE_DEVICES:-10}
REPORT=${REPORT:-target/fleet-load.md}
MOSQUITTO=$(command -v mosquitto || echo /usr/sbin/mosquitto)
[ -x "$MOSQUITTO" ] || { echo "needs mosquitto (apt install mosquitto mosquitto-clients)"; exit 1; }
BIN=target/release/dermcam
[ -x "$BIN" ] || cargo build --release
W=$(mktemp -d /tmp/dermcam-fleet-load.XXXXXX)
trap 'pkill -P $$ || true; sleep 0.5; rm -rf "$W"' EXIT
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
printf 'listener %s 127.0.0.1\nallow_anonymous true\nmax_queued_messages 100000\nuser root\n' "$PORT" > "$W/m.conf"
"$MOSQUITTO" -c "$W/m.conf" 2> "$W/broker.log" &
BROKER=$!
sleep 0.5

config() { # dir fleet-body interval-ms model
  cat > "$1/config.toml" <<EOF
[source]
kind = "images"
path = "$PWD/tests/samples"
interval_ms = $3
[screen]
kind = "png"
path = "$1/screen.png"
width = 240
height = 240
[web]
enabled = false
[model]
path = "$PWD/models/$4"
threads = 1
$2
EOF
}

fleet_body() { # device-id rate extra
  printf '[fleet]\nbroker = "mqtt://127.0.0.1:%s"\ndevice_id = "%s"\npublish = "all"\nmax_rate_hz = %s\nqueue_dir = "%s"\nstatus_interval_s = 5\n%s\n' \
    "$PORT" "$1" "$2" "$W/q-$1" "${3:-}"
}

# ---- 1. fleet off vs on, one device, model-bound pipeline (frames every 10 ms)
ab_run() { # name fleet-body
  local d="$W/ab-$1"; mkdir -p "$d"
  config "$d" "$2" 10 effl0-v2
  "$BIN" run --config "$d/config.toml" > /dev/null 2> "$d/log" &
  local pid=$!
  sleep "$SECONDS_AB"
  local rss; rss=$(awk '/VmHWM/ {print $2}' /proc/$pid/status)
  kill -TERM $pid; wait $pid || true
  local inf; inf=$(grep -o 'inferences [0-9]*' "$d/log" | awk '{print $2}')
  echo "$inf $rss"
}
declare -a OFF_RATE OFF_RSS ON_RATE ON_RSS FRZ_RATE FRZ_RSS
for r in $(seq "$ROUNDS"); do
  read -r i m < <(ab_run "off-$r" "")
  OFF_RATE+=("$(python3 -c "print($i/$SECONDS_AB)")"); OFF_RSS+=("$m")
  read -r i m < <(ab_run "on-$r" "$(fleet_body ab-$r 100)")
  ON_RATE+=("$(python3 -c "print($i/$SECONDS_AB)")"); ON_RSS+=("$m")
  # The default: connected, status only, results when frozen.
  read -r i m < <(ab_run "frozen-$r" "$(fleet_body frz-$r 1 | sed 's/publish = "all"/publish = "frozen"/')")
  FRZ_RATE+=("$(python3 -c "print($i/$SECONDS_AB)")"); FRZ_RSS+=("$m")
done
if [ -n "${ONLY_AB:-}" ]; then DEVICES=0; UPDATE_DEVICES=0; fi

# ---- 2. DEVICES devices on one broker
RATE=n/a; BROKER_CPU=n/a; DUPS=n/a; DEV_RSS=0; UPDATED=n/a; UPDATE_S=n/a; REFUSED=n/a; STAYED=n/a
if [ "$DEVICES" -gt 0 ]; then
SUB="$W/sub.txt"
mosquitto_sub -h 127.0.0.1 -p "$PORT" -q 1 -t 'dermcam/+/result' > "$SUB" &
SUBPID=$!
sleep 0.3
PIDS=()
for n in $(seq "$DEVICES"); do
  d="$W/dev-$n"; mkdir -p "$d"
  config "$d" "$(fleet_body "dev$n" 2)" 500 effl0-v2-int8
  "$BIN" run --config "$d/config.toml" > /dev/null 2> "$d/log" &
  PIDS+=($!)
done
# Count from when every device has connected.
for _ in $(seq 120); do
  c=$( (grep -l "fleet: connected" "$W"/dev-*/log 2> /dev/null || true) | wc -l)
  [ "$c" -ge "$DEVICES" ] && break
  sleep 1
done
B0=$(wc -l < "$SUB"); T0=$(date +%s.%N); C0=$(awk '{print $14+$15}' /proc/$BROKER/stat)
sleep "$SECONDS_FLEET"
B1=$(wc -l < "$SUB"); T1=$(date +%s.%N); C1=$(awk '{print $14+$15}' /proc/$BROKER/stat)
DEV_RSS=$(for p in "${PIDS[@]}"; do awk '/VmRSS/ {print $2}' /proc/$p/status; done | sort -n | awk '{a[NR]=$1} END {print a[int(NR/2)+1]}')
kill -TERM "${PIDS[@]}"; wait "${PIDS[@]}" 2> /dev/null || true
sleep 2
kill $SUBPID
DUPS=$(python3 - "$SUB" <<'EOF'
import json, sys
ids = [json.loads(l)["id"] for l in open(sys.argv[1]) if l.strip()]
print(len(ids) - len(set(ids)))
EOF
)
TICK=$(getconf CLK_TCK)
read -r RATE BROKER_CPU < <(python3 -c "d=$T1-$T0; print(f'{($B1-$B0)/d:.1f} {100*($C1-$C0)/$TICK/d:.1f}')")
fi

# ---- 3. model update across UPDATE_DEVICES devices, then a broken bundle
if [ "$UPDATE_DEVICES" -gt 0 ]; then
"$BIN" bundle keygen --out "$W/key" > "$W/pub"
"$BIN" bundle pack models/effl0-v2-int8 --out "$W/good.tar" > /dev/null
"$BIN" bundle sign "$W/good.tar" --key "$W/key" --url "file://$W/good.tar" --version 1 > "$W/good.json"
PUB=$(cat "$W/pub")
GOOD_SHA=$(python3 -c "import json; print(json.load(open('models/effl0-v2-int8/model.json'))['sha256'])")
STATUS="$W/status.txt"
mosquitto_sub -h 127.0.0.1 -p "$PORT" -t 'dermcam/+/status' -v > "$STATUS" &
SPID=$!
UP=()
for n in $(seq "$UPDATE_DEVICES"); do
  d="$W/up-$n"; mkdir -p "$d"
  config "$d" "$(fleet_body "up$n" 1 "[fleet.updates]
public_key = \"$PUB\"
models_dir = \"$d/models\"")" 1000 effl0-v2
  "$BIN" run --config "$d/config.toml" > /dev/null 2> "$d/log" &
  UP+=($!)
done
sleep 5
t0=$(date +%s.%N)
mosquitto_pub -h 127.0.0.1 -p "$PORT" -t dermcam/fleet/model -r -q 1 -f "$W/good.json"
on_model() { # sha -> how many update devices report it in their latest status
  python3 - "$STATUS" "$1" "$UPDATE_DEVICES" <<'EOF'
import json, sys
last = {}
for l in open(sys.argv[1]):
    t, _, body = l.partition(" ")
    if "/up" in t:
        v = json.loads(body)
        if v.get("online"): last[t] = v
print(sum(1 for v in last.values() if v["model"]["sha256"] == sys.argv[2]))
EOF
}
for _ in $(seq 240); do
  [ "$(on_model "$GOOD_SHA")" -ge "$UPDATE_DEVICES" ] && break
  sleep 0.5
done
UPDATED=$(on_model "$GOOD_SHA")
UPDATE_S=$(python3 -c "import time; print(f'{time.time()-$t0:.1f}')")
# A broken bundle, properly signed: the model file damaged, the manifest unchanged.
mkdir -p "$W/broken" && tar -xf "$W/good.tar" -C "$W/broken"
head -c 100000 "$W/broken/model.onnx" > "$W/broken/m" && mv "$W/broken/m" "$W/broken/model.onnx"
tar -cf "$W/broken.tar" -C "$W/broken" .
"$BIN" bundle sign "$W/broken.tar" --key "$W/key" --url "file://$W/broken.tar" --version 2 > "$W/broken.json"
mosquitto_pub -h 127.0.0.1 -p "$PORT" -t dermcam/fleet/model -r -q 1 -f "$W/broken.json"
sleep 15
REFUSED=$( (grep -l "effl0-broken refused" "$W"/up-*/log || true) | wc -l)
STAYED=$(on_model "$GOOD_SHA")
kill -TERM "${UP[@]}"; wait "${UP[@]}" 2> /dev/null || true
kill $SPID
fi

python3 - "$REPORT" <<EOF
import statistics as s, sys
off_r=[${OFF_RATE[*]/%/,}]; on_r=[${ON_RATE[*]/%/,}]
off_m=[${OFF_RSS[*]/%/,}]; on_m=[${ON_RSS[*]/%/,}]
frz_r=[${FRZ_RATE[*]/%/,}]; frz_m=[${FRZ_RSS[*]/%/,}]
rate=s.median(on_r)/s.median(off_r)
rss=(s.median(on_m)-s.median(off_m))/1024
frate=s.median(frz_r)/s.median(off_r)
frss=(s.median(frz_m)-s.median(off_m))/1024
mb=lambda v: f"{min(v)/1024:.0f}-{max(v)/1024:.0f}"
out=f"""# Fleet load ($(nproc) cores, $(date -u +%Y-%m-%d))

Command: \`bash tests/fleet/load.sh\` (SECONDS_AB=$SECONDS_AB ROUNDS=$ROUNDS DEVICES=$DEVICES SECONDS_FLEET=$SECONDS_FLEET UPDATE_DEVICES=$UPDATE_DEVICES)

## Fleet off vs on (one device, effl0-v2, 1 thread, frames every 10 ms: model-bound), interleaved rounds
| | fleet off | on, `publish = "all"` (every inference, up to 100/s) | on / off | on, `publish = "frozen"` (default: status only here) | on / off |
|---|---|---|---|---|---|
| pipeline rate (inferences/s), median of {len(off_r)} | {s.median(off_r):.2f} | {s.median(on_r):.2f} | {rate:.3f} | {s.median(frz_r):.2f} | {frate:.3f} |
| peak RSS (MB), median (min-max) | {s.median(off_m)/1024:.1f} ({mb(off_m)}) | {s.median(on_m)/1024:.1f} ({mb(on_m)}) | {rss:+.1f} MB | {s.median(frz_m)/1024:.1f} ({mb(frz_m)}) | {frss:+.1f} MB |

Rates per round (off / all / frozen): {[round(x, 1) for x in off_r]} / {[round(x, 1) for x in on_r]} / {[round(x, 1) for x in frz_r]}

## $DEVICES devices on one broker (effl0-v2-int8, slideshow 2 frames/s, publish = all at <= 2/s)
- results received: **$RATE messages/s** over ${SECONDS_FLEET} s (one QoS 1 subscriber)
- duplicates among received ids: $DUPS
- broker CPU: $BROKER_CPU % of one core; device RSS median: $((DEV_RSS / 1024)) MB

## Model update across $UPDATE_DEVICES devices
- signed good bundle: $UPDATED / $UPDATE_DEVICES devices report the new model sha256 after $UPDATE_S s
- signed broken bundle: refused by $REFUSED / $UPDATE_DEVICES; still on the good model: $STAYED / $UPDATE_DEVICES
"""
open(sys.argv[1], "w").write(out)
print(out)
EOF
