#!/usr/bin/env bash
# Model v3 from ImageNet: the training runs behind the v3 bundles, in order, in one go (a GPU
# lease: on a 2-core CPU box a Lite2 epoch takes ~150 s, Lite0 ~75 s, i.e. hours for all of it;
# finetune_v3.sh is the CPU alternative).
#   RUNS=runs/v3 bash models/train_v3.sh        (CUDA when available)
# v3 = v2 (shortcut-free look, strong colour / white-balance jitter, balanced sampling, EMA) +
# Shades of Gray colour constancy (p = 6) on every crop, also written into the bundles' input
# spec so the device applies the same. Order:
# 1. EfficientNet-Lite2 teacher (ImageNet init) at 260 px;
# 2. EfficientNet-Lite0 at 224 distilled from it (the device model);
# 3. ResNet-18 (the paper's network, from scratch) distilled from it, longer than v2;
# 4. leave-one-archive-out Lite0 runs (recall on the held-out class/archive images).
# Then, on the build machine (needs the release binary and the non-lesion set, see README):
#   python -m dermtrain export --run runs/v3/<run> --bundle models/<name>
#   python -m dermtrain ood-fit --bundle models/<name> --ood ood && python -m dermtrain ood-card models/<name>
#   python -m dermtrain colour-check --bundle <name>; python -m dermtrain device-eval models/<name>
# Budgets are seconds per run; the epoch count each run used is in its best.pt / history.csv.
set -euo pipefail
cd "$(dirname "$0")"
PY=${PY:-python3}
RUNS=${RUNS:-runs/v3}
DATA=${DATA:-"../../shared/data/skin9 ../../shared/data/skin9-extra"}
B_TEACHER=${B_TEACHER:-150} B_STUDENT=${B_STUDENT:-120} B_RESNET=${B_RESNET:-240} B_LOAO=${B_LOAO:-40}
mkdir -p "$RUNS"
# shellcheck disable=SC2086
common() { "$PY" -m dermtrain train --recipe v3 --data $DATA "$@"; }
common --arch efficientnet_lite2 --size 260 --epochs 60 --time-budget "$B_TEACHER" --out "$RUNS/effl2"
common --arch efficientnet_lite0 --size 224 --epochs 60 --time-budget "$B_STUDENT" --teacher "$RUNS/effl2/best.pt" --out "$RUNS/effl0"
common --arch resnet18 --size 224 --epochs 240 --lr 2e-3 --time-budget "$B_RESNET" --teacher "$RUNS/effl2/best.pt" --out "$RUNS/resnet18"
common --arch efficientnet_lite0 --size 224 --epochs 25 --time-budget "$B_LOAO" --holdout melanoma:ham10000 --out "$RUNS/loao-mel-ham"
common --arch efficientnet_lite0 --size 224 --epochs 25 --time-budget "$B_LOAO" --holdout melanocytic_nevus:isic_2016_2017 --out "$RUNS/loao-nev-old"
echo "all v3 runs done: $RUNS"
