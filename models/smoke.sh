#!/usr/bin/env bash
# Toolchain smoke test (run by .ci/run): dataset-reader unit tests, then train 1 epoch on a
# tiny subset at low resolution, export fp32 + int8, and check that `dermcam classify` loads
# the result and agrees with ONNX Runtime on top-1 for real images.
# Needs Debian python3-torch/python3-torchvision (or PyPI torch) and the repo's release build.
set -euo pipefail
cd "$(dirname "$0")"
VENV=${VENV:-../target/toolchain-venv}
# Debian's python3-torch lives in the system interpreter's site-packages (not in a pyenv one).
BASE_PY=${BASE_PY:-/usr/bin/python3}
if [ ! -x "$VENV/bin/python" ]; then
  "$BASE_PY" -m venv --system-site-packages "$VENV"
fi
# The pins of requirements.txt except torch/torchvision (Debian's, from the system site).
grep -Ev '^(#|torch|torchvision)' requirements.txt | grep . > "$VENV/pins.txt"
"$VENV/bin/pip" install --quiet --disable-pip-version-check -r "$VENV/pins.txt"
PY="$VENV/bin/python"
OUT=../target/toolchain-smoke
rm -rf "$OUT"
"$PY" -m unittest discover -s tests -t . -v
# v2 options on a tiny subset of skin9 + skin9-extra: a Lite2 teacher, a distilled Lite0 with a
# leave-one-archive-out holdout, and the archive probe.
"$PY" -m dermtrain train --arch efficientnet_lite2 --recipe v2 --out "$OUT/run-teacher" --epochs 1 --size 64 --limit-per-class 2 --threads 2 --no-checkpoint
# Distillation from cached teacher views (the CPU recipe's cost cut), then a resume that must
# reuse the decoded images and the views instead of rebuilding them.
"$PY" -m dermtrain train --arch efficientnet_lite0 --recipe v3 --out "$OUT/run-kd" --epochs 2 --size 64 --limit-per-class 2 --threads 2 --teacher "$OUT/run-teacher/best.pt" --kd-views 2
ls "$OUT"/run-kd/kd-views-*.pt "$OUT"/run-kd/decoded-*.pt > /dev/null
rm "$OUT/run-kd/done.json"
"$PY" -m dermtrain train --arch efficientnet_lite0 --recipe v3 --out "$OUT/run-kd" --epochs 2 --size 64 --limit-per-class 2 --threads 2 --teacher "$OUT/run-teacher/best.pt" --kd-views 2 --resume | tee "$OUT/run-kd/resume.log"
grep -q "teacher views from" "$OUT/run-kd/resume.log" && grep -q "decoded images from" "$OUT/run-kd/resume.log"
"$PY" -m dermtrain probe --run "$OUT/run-teacher" --limit 40 --out "$OUT/probe.json" --threads 2
"$PY" - "$OUT/probe.json" <<'PYEOF'
import json, sys
p = json.load(open(sys.argv[1]))
assert 0.0 <= p["archive_probe"]["auc"] <= 1.0 and p["images"] == 40, p
PYEOF
# v3 (Shades of Gray on every crop and in the bundle's input spec): the device must apply the
# same colour constancy, or top-1 parity with ONNX Runtime on Python's preprocessing fails.
for spec in resnet18:paper efficientnet_lite0:v2 efficientnet_lite0:v3; do
  arch=${spec%%:*}; recipe=${spec##*:}
  name=$arch; [ "$recipe" = v3 ] && name=$arch-v3
  extra=()
  [ "$recipe" = v2 ] && extra=(--teacher "$OUT/run-teacher/best.pt" --holdout melanoma:ham10000)
  "$PY" -m dermtrain train --arch $arch --recipe $recipe --out "$OUT/run-$name" --epochs 1 --size 64 --limit-per-class 4 --threads 2 "${extra[@]}"
  [ "$recipe" = v2 ] && test -s "$OUT/run-$name/holdout.json"
  "$PY" -m dermtrain export --run "$OUT/run-$name" --bundle "$OUT/$name" --limit-per-class 2 --calib-images 16 --dermcam ../target/release/dermcam
  IMAGES=(../tests/samples/*.jpg)
  "$PY" -m dermtrain parity --bundle "$OUT/$name" --out "$OUT/parity-$name" "${IMAGES[@]}"
  ../target/release/dermcam classify --json --model "$OUT/$name" "${IMAGES[@]}" > "$OUT/dermcam-$name.jsonl"
  ../target/release/dermcam classify --json --model "$OUT/$name-int8" "${IMAGES[@]}" > /dev/null
  "$PY" - "$OUT/parity-$name/reference.json" "$OUT/dermcam-$name.jsonl" "$OUT/$name/model.json" "$recipe" <<'PYEOF'
import json, sys, os
ref = json.load(open(sys.argv[1]))["images"]
rows = [json.loads(l) for l in open(sys.argv[2])]
man = json.load(open(sys.argv[3]))
cc = man["input"].get("colour_constancy")
assert (cc == {"kind": "shades_of_gray", "p": 6.0}) == (sys.argv[4] == "v3"), (sys.argv[4], cc)
assert len(rows) == len(ref), (len(rows), len(ref))
# The refer threshold is in the manifest and applied by the device to every result.
t = man["refer"]["threshold"]
assert man["refer"]["classes"] == ["melanoma", "squamous_cell_carcinoma"], man["refer"]
for r in rows:
    if abs(r["malignant_probability"] - t) > 1e-6:  # f32 on the device, f64 here
        assert r["refer"] == (r["malignant_probability"] >= t), r
assert "refer" in man["metrics"] and "val_per_archive" in man["metrics"], list(man["metrics"])
bad = 0
for r in rows:
    want = ref[os.path.basename(r["path"])]
    got = r["top"][0]["id"]
    # A 1-epoch model has near-uniform outputs; exact ties aside, top-1 must match ORT.
    p = sorted(want["probabilities"], reverse=True)
    if got != want["top1"] and p[0] - p[1] > 1e-3:
        bad += 1
        print("top-1 mismatch", r["path"], got, want["top1"], p[:2])
assert bad == 0, f"{bad} images disagree between dermcam (tract) and ONNX Runtime"
print(f"toolchain smoke: dermcam and ONNX Runtime agree on top-1 for {len(rows)} images")
PYEOF
done
# Model v3 options on the tiny Lite0 bundle: a synthetic non-lesion set, the "not a lesion" score
# and class-activation maps added to the graph, and the device reading both (outcome word, a
# score within the manifest's threshold rule, no refer on not_lesion).
"$PY" -m dermtrain ood-set --out "$OUT/ood-set" --synthetic 12
"$PY" -m dermtrain ood-fit --bundle "$OUT/efficientnet_lite0" --ood "$OUT/ood-set" --out "$OUT/efficientnet_lite0-ood" --limit-per-class 3 --threads 2
../target/release/dermcam classify --json --model "$OUT/efficientnet_lite0-ood" ../tests/samples/*.jpg "$OUT"/ood-set/test/*.jpg > "$OUT/dermcam-ood.jsonl"
"$PY" - "$OUT/dermcam-ood.jsonl" "$OUT/efficientnet_lite0-ood/model.json" <<'PYEOF'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
man = json.load(open(sys.argv[2]))
assert man["ood"]["output"] == "ood" and man["cam"]["output"] == "cam", man.get("ood")
for r in rows:
    assert r["outcome"] in ("class", "uncertain", "retake", "not_lesion"), r
    if r["outcome"] == "not_lesion":
        assert r["refer"] is False and r["ood_score"] > man["ood"]["threshold"], r
    elif r["outcome"] != "retake":
        assert r["ood_score"] <= man["ood"]["threshold"] + 1e-3, r
print(f"toolchain smoke: ood/cam bundle read by dermcam, outcomes {sorted({r['outcome'] for r in rows})}")
PYEOF
# Test-time augmentation check (the eight views through ONNX Runtime, held-out operating point).
"$PY" -m dermtrain tta-check --bundle "$OUT/efficientnet_lite0-ood" --limit-per-class 3 --threads 2 | tail -1 > "$OUT/tta.json"
"$PY" - "$OUT/tta.json" <<'PYEOF'
import json, sys
t = json.load(open(sys.argv[1]))
assert t["images"] == 27 and set(t["modes"]) == {"none", "flip", "dihedral8"}, t
for m in t["modes"].values():
    sp = m["split_half"]["specificity"]
    assert 0.0 <= m["balanced_accuracy"] <= 1.0 and (sp is None or 0.0 <= sp <= 1.0), m
    at = m["bundle_threshold"]
    assert sum(g["n"] for g in at["per_source"].values()) == 27 == sum(g["n"] for g in at["per_archive"].values()), at
PYEOF
# Warm start from a bundle (how the CPU fine-tunes start from the v2 bundles): the weights come
# back from the ood/cam graph, and the run records which bundle it started from.
"$PY" -m dermtrain train --arch efficientnet_lite0 --recipe v3 --init "$OUT/efficientnet_lite0-ood" --out "$OUT/run-warm" --epochs 1 --size 64 --limit-per-class 2 --threads 2 --no-checkpoint
"$PY" - "$OUT/run-warm/best.pt" <<'PYEOF'
import sys, torch
ck = torch.load(sys.argv[1], map_location="cpu")
assert ck["init"].startswith("efficientnet_lite0-ood bundle "), ck["init"]
print(f"toolchain smoke: warm start from a bundle ({ck['init']})")
PYEOF
