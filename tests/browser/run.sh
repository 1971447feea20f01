#!/usr/bin/env bash
# Real-browser test: serve the UI with `dermcam demo`, drive headless chromium with
# playwright-core. Needs Debian `chromium` and npm (installed by .ci/run).
set -euo pipefail
cd "$(dirname "$0")/../.."
BIN=target/release/dermcam
OUT=target/browser
PORT=${PORT:-18181}
mkdir -p "$OUT"
(cd tests/browser && npm install --no-audit --no-fund --silent)
"$BIN" demo --web 127.0.0.1:$PORT --screen "$OUT/screen.png" --interval-ms 800 > "$OUT/demo.log" 2>&1 < /dev/null &
DEMO=$!
trap 'kill $DEMO 2>/dev/null || true' EXIT
for _ in $(seq 1 100); do
  curl -sf "http://127.0.0.1:$PORT/healthz" > /dev/null && break
  sleep 0.2
done
node tests/browser/upload.mjs "http://127.0.0.1:$PORT" "$BIN" "tests/samples/melanoma__ISIC_0000154.jpg" "$OUT"
kill -TERM $DEMO
wait $DEMO || true
grep -q "SIGTERM: shutting down" "$OUT/demo.log" || { echo "demo did not shut down cleanly"; cat "$OUT/demo.log"; exit 1; }
