"""Device re-measurement: run `dermcam eval` on a bundle and make the appliance's own figures the
headline ones in model.json and the model card (`dermcam eval` then reproduces them exactly)."""

import json
import shutil
import subprocess
from pathlib import Path

from . import bundle
from .card import model_card


def device_eval(folder, dermcam, data_dirs, history, checks=None):
    """Re-measure a bundle with the appliance itself; these become the headline figures in
    model.json and the card, so `dermcam eval` reproduces them exactly. The toolchain's ONNX
    Runtime figures stay under `val_onnxruntime`."""
    folder = Path(folder)
    report = folder / "device-eval"
    cmd = [
        str(dermcam),
        "eval",
        *[str(d) for d in data_dirs],
        "--split",
        "val",
        "--model",
        str(folder),
        "--report",
        str(report),
    ]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    r = json.loads((report / "report.json").read_text())
    s = r["summary"]
    val = {
        k: s[k] for k in ("n", "accuracy", "balanced_accuracy", "macro_f1", "macro_auc_ovr", "ece_15", "abstain_rate")
    }
    val["melanoma_recall"] = r["melanoma_recall"]
    val["per_class"] = [{k: c[k] for k in ("class", "precision", "recall", "f1", "support")} for c in s["per_class"]]
    val["confusion_matrix"] = s["confusion_matrix"]
    mm = dict(bundle.read_manifest(folder)["metrics"])
    if "val_onnxruntime" not in mm:
        mm["val_onnxruntime"] = mm["val"]
    mm["val"] = val
    mm["val_lesion_clean"] = r.get("lesion_clean")
    mm["val_per_source"] = r["per_source"]
    mm["val_per_archive"] = r["per_archive"]
    mm["refer"] = r["refer"]
    mm["measured_with"] = "dermcam eval " + " ".join(cmd[2:])
    if checks:
        mm["shortcut_checks"] = checks
    man = bundle.update_manifest(folder, metrics=mm)
    shutil.copyfile(report / "confusion_matrix.png", folder / "confusion_matrix.png")
    shutil.copyfile(report / "refer_roc.png", folder / "refer_roc.png")
    (folder / "MODEL_CARD.md").write_text(model_card(man, history))
    shutil.rmtree(report)


def device_eval_cmd(args):
    """`python -m dermtrain device-eval BUNDLE... [--run RUN] [--checks JSON]`."""
    hist = (Path(args.run) / "history.csv").read_text() if args.run else ""
    checks = json.loads(Path(args.checks).read_text()) if args.checks else None
    for b in args.bundles:
        device_eval(b, args.dermcam, args.data, hist, checks)
        print(f"{b}: re-measured with {args.dermcam}")
