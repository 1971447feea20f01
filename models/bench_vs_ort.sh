#!/usr/bin/env bash
# tract (dermcam bench) vs ONNX Runtime on the same bundles, same machine, one run:
# prints p50 inference latency per runtime and the tract/ORT ratio, 1 thread and all threads.
# Usage: models/bench_vs_ort.sh [bundle...]   (default: every bundle in models/)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-target/toolchain-venv/bin/python}
BIN=target/release/dermcam
ITER=${ITER:-30}
BUNDLES=("$@")
[ ${#BUNDLES[@]} -gt 0 ] || BUNDLES=($(ls -d models/*/ | sed 's:/$::' | while read d; do [ -f "$d/model.json" ] && echo "$d"; done))
ARGS=(); for b in "${BUNDLES[@]}"; do ARGS+=(--model "$b"); done
TMP=$(mktemp -d)
"$BIN" bench "${ARGS[@]}" --threads 1 --iterations "$ITER" --json > "$TMP/tract1.jsonl"
"$BIN" bench "${ARGS[@]}" --threads 0 --iterations "$ITER" --json > "$TMP/tractN.jsonl"
PYABS=$(cd "$(dirname "$PY")" && pwd)/$(basename "$PY")
(cd models && "$PYABS" -m dermtrain ort-bench "${BUNDLES[@]/#/../}" --iterations "$ITER" --threads 1 0) > "$TMP/ort.jsonl"
"$PY" - "$TMP" <<'PYEOF'
import json, os, sys
d = sys.argv[1]
rows = lambda f: [json.loads(l) for l in open(os.path.join(d, f)) if l.strip()]
ort = {(r["bundle"], r["threads"]): r for r in rows("ort.jsonl")}
print(f"{'bundle':<22} {'thr':>3} {'tract p50 ms':>12} {'ORT p50 ms':>10} {'tract/ORT':>9} {'pre ms':>7} {'load ms':>8} {'RSS MB':>7}")
for f in ("tract1.jsonl", "tractN.jsonl"):
    for r in rows(f):
        o = ort.get((r["bundle"], r["threads"]))
        ratio = r["inference"]["p50_ms"] / o["p50_ms"] if o else float("nan")
        print(f"{r['bundle']:<22} {r['threads']:>3} {r['inference']['p50_ms']:>12.2f} {o['p50_ms'] if o else float('nan'):>10.2f} {ratio:>9.2f} "
              f"{r['preprocess_640x480']['p50_ms']:>7.2f} {r['load_ms']:>8.0f} {r['peak_rss_mb'] or 0:>7.0f}")
PYEOF
rm -rf "$TMP"
