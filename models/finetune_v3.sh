#!/usr/bin/env bash
# Model v3 on a CPU build machine (2 cores): the v2 bundles fine-tuned with the v3 recipe
# (Shades of Gray on every crop) instead of training from ImageNet, which needs a GPU
# (train_v3.sh). The v2 training checkpoints are not kept, so each run starts from its v2
# bundle's model.onnx (`--init <bundle>`: weights back from the ONNX graph, batch-norm statistics
# re-measured on training images). Budgets are seconds per run (~150 s per Lite2 epoch at 260 px,
# ~75 s per Lite0 epoch at 224 px on 2 cores; the estimate in the log is a little pessimistic).
#   RUNS=runs/v3 bash models/finetune_v3.sh
# Then export / ood-fit / colour-check / device-eval as in train_v3.sh.
set -euo pipefail
cd "$(dirname "$0")"
PY=${PY:-python3}
RUNS=${RUNS:-runs/v3}
DATA=${DATA:-"../../shared/data/skin9 ../../shared/data/skin9-extra"}
B_LITE2=${B_LITE2:-2700} B_LITE0=${B_LITE0:-1400} LR=${LR:-4e-4}
mkdir -p "$RUNS"
# shellcheck disable=SC2086
common() { "$PY" -m dermtrain train --recipe v3 --data $DATA --lr "$LR" "$@"; }
common --arch efficientnet_lite2 --size 260 --epochs 8 --time-budget "$B_LITE2" --init effl2-v2 --out "$RUNS/effl2-ft"
common --arch efficientnet_lite0 --size 224 --epochs 10 --time-budget "$B_LITE0" --init effl0-v2 --out "$RUNS/effl0-ft"
echo "v3 fine-tunes done: $RUNS"
