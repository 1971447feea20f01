#!/usr/bin/env bash
# Model v2: every training run behind the shipped v2 bundles, in order, on one machine.
#   RUNS=runs/v2 bash models/train_v2.sh            (CUDA when available; CPU works, ~days on 2 cores)
# 1. EfficientNet-Lite2 teacher (ImageNet init) at 260 px;
# 2. EfficientNet-Lite0 at 224 distilled from it (the device model);
# 3. ResNet-18 (the paper's network, from scratch) distilled from it;
# 4. two leave-one-archive-out runs: no HAM10000 melanomas / no old-archive nevi in training,
#    recall measured on exactly those images (holdout.json);
# 5. archive probes (probe-*.json): ImageNet features vs the trained networks.
# Time budgets (seconds per run) fit each schedule to a short GPU lease; the epoch count each run
# actually used is in its best.pt / history.csv, and `--epochs N` without a budget reproduces it.
set -euo pipefail
cd "$(dirname "$0")"
PY=${PY:-python3}
RUNS=${RUNS:-runs/v2}
DATA=${DATA:-"../../shared/data/skin9 ../../shared/data/skin9-extra"}
B_TEACHER=${B_TEACHER:-100} B_STUDENT=${B_STUDENT:-80} B_RESNET=${B_RESNET:-110} B_LOAO=${B_LOAO:-40}
mkdir -p "$RUNS"
# shellcheck disable=SC2086
common() { "$PY" -m dermtrain train --recipe v2 --data $DATA --no-checkpoint "$@"; }
common --arch efficientnet_lite2 --size 260 --epochs 40 --time-budget "$B_TEACHER" --out "$RUNS/effl2"
common --arch efficientnet_lite0 --size 224 --epochs 40 --time-budget "$B_STUDENT" --teacher "$RUNS/effl2/best.pt" --out "$RUNS/effl0"
common --arch resnet18 --size 224 --epochs 120 --lr 2e-3 --time-budget "$B_RESNET" --teacher "$RUNS/effl2/best.pt" --out "$RUNS/resnet18"
common --arch efficientnet_lite0 --size 224 --epochs 25 --time-budget "$B_LOAO" --holdout melanoma:ham10000 --out "$RUNS/loao-mel-ham"
common --arch efficientnet_lite0 --size 224 --epochs 25 --time-budget "$B_LOAO" --holdout melanocytic_nevus:isic_2016_2017 --out "$RUNS/loao-nev-old"
# shellcheck disable=SC2086
"$PY" -m dermtrain probe --imagenet efficientnet_lite0 --data $DATA --out "$RUNS/probe-imagenet-lite0.json"
# shellcheck disable=SC2086
"$PY" -m dermtrain probe --run "$RUNS/effl0" --data $DATA --out "$RUNS/probe-effl0.json"
# shellcheck disable=SC2086
"$PY" -m dermtrain probe --run "$RUNS/effl2" --data $DATA --out "$RUNS/probe-effl2.json"
# shellcheck disable=SC2086
"$PY" -m dermtrain probe --run "$RUNS/resnet18" --data $DATA --out "$RUNS/probe-resnet18.json"
echo "all v2 runs done: $RUNS"
