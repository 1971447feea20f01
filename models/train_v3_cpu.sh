#!/usr/bin/env bash
# Model v3 from ImageNet on a CPU build machine (2 cores), resumable across sessions: the same
# runs as train_v3.sh with fixed epoch counts (a time budget would be fitted to whatever else the
# machine runs at the moment it is measured). Every run checkpoints each epoch (optimizer, EMA,
# sampler and RNG state, the fitted epoch count) into RUNS, outside the work tree; run this script
# again and it resumes where it stopped and skips runs that finished (done.json).
#   nohup nice -n 19 bash models/train_v3_cpu.sh > ~/.cache/dermcam-runs/v3.log 2>&1 &
# Measured per epoch on the 2-core box (nothing else running): Lite2 260 px ~300 s, Lite0 224 px ~75 s
# (+ the teacher's forward pass when distilling).
set -euo pipefail
cd "$(dirname "$0")"
PY=${PY:-python3}
RUNS=${RUNS:-${XDG_CACHE_HOME:-$HOME/.cache}/dermcam-runs/v3}
DATA=${DATA:-"../../shared/data/skin9 ../../shared/data/skin9-extra"}
E_TEACHER=${E_TEACHER:-24} E_STUDENT=${E_STUDENT:-30} E_RESNET=${E_RESNET:-60} E_LOAO=${E_LOAO:-12}
# KD_VIEWS=N: the students distil from N cached augmented views per image with the teacher's
# logits (no teacher pass per step); off until measured against fresh views on val.
KD=()
[ "${KD_VIEWS:-0}" -gt 0 ] && KD=(--kd-views "$KD_VIEWS")
mkdir -p "$RUNS"
run() {
  local out=$1; shift
  if [ -s "$RUNS/$out/done.json" ]; then echo "$(date -u +%FT%TZ) $out: done, skipped"; return; fi
  echo "$(date -u +%FT%TZ) $out: start or resume"
  # shellcheck disable=SC2086
  "$PY" -m dermtrain train --recipe v3 --data $DATA --threads "${THREADS:-2}" --resume --out "$RUNS/$out" "$@"
}
run effl2 --arch efficientnet_lite2 --size 260 --epochs "$E_TEACHER"
run effl0 --arch efficientnet_lite0 --size 224 --epochs "$E_STUDENT" --teacher "$RUNS/effl2/best.pt" "${KD[@]}"
run resnet18 --arch resnet18 --size 224 --epochs "$E_RESNET" --lr 2e-3 --teacher "$RUNS/effl2/best.pt" "${KD[@]}"
run loao-mel-ham --arch efficientnet_lite0 --size 224 --epochs "$E_LOAO" --holdout melanoma:ham10000
run loao-nev-old --arch efficientnet_lite0 --size 224 --epochs "$E_LOAO" --holdout melanocytic_nevus:isic_2016_2017
echo "$(date -u +%FT%TZ) all v3 runs done: $RUNS"
