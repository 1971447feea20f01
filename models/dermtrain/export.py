"""`export`: a trained run to dermcam bundles. The steps live in their own modules: ONNX export
and the ORT check (onnx_export), temperature and refer threshold (calibrate), validation figures
(val_metrics), int8 QDQ (quantize), model.json + bundle folder (bundle), MODEL_CARD.md (card) and
the re-measurement with `dermcam eval` (device_eval); this module runs them in order."""

import datetime
import json
import os
from pathlib import Path

import numpy as np
import torch

from . import bundle, data, metrics, nets
from .calibrate import choose_refer_threshold, fit_temperature, malignant_score, refer_section
from .card import model_card
from .device_eval import device_eval
from .onnx_export import export_onnx, ort_logits, ort_session
from .quantize import int8_vs_fp32, quantize_int8
from .val_metrics import full_metrics, plot_confusion


def export(args):
    torch.set_num_threads(args.threads or os.cpu_count())
    run = Path(args.run)
    ck = torch.load(run / "best.pt", map_location="cpu")
    classes = data.load_classes()
    names = [c["folder"] for c in classes]
    model, _ = nets.build(ck["arch"], len(classes), pretrained=False, layout=ck.get("layout"))
    model.load_state_dict(ck["model"])
    model.eval()
    size = ck["size"]
    spec = data.input_spec_for(size, (ck.get("recipe_params") or {}).get("colour_constancy"))
    samples = data.read_datasets(args.data, classes)
    leaky = data.leaky_val(samples)
    val_s = [s for s in samples if s.split == "val"]
    train_s = [s for s in samples if s.split == "train"]
    if args.limit_per_class:
        val_s = data.first_per_class(val_s, args.limit_per_class, len(classes))
    clean = np.array([s.path not in leaky for s in val_s])
    rng = np.random.default_rng(0)
    calib_s = [train_s[i] for i in rng.choice(len(train_s), min(args.calib_images, len(train_s)), replace=False)]
    xva = np.stack([data.preprocess_pil(data.load_rgb(s.path), spec) for s in val_s])
    yva = np.array([s.label for s in val_s])

    out = Path(args.bundle)
    name = args.name or out.name
    work = run / "export"
    work.mkdir(exist_ok=True)
    fp32 = work / "model.onnx"
    sess = export_onnx(model, size, fp32, xva)

    logits = ort_logits(sess, xva)
    # Temperature and refer threshold are fitted on the lesion-clean part of val only.
    temperature = fit_temperature(logits[clean], yva[clean])
    m_raw = metrics.summary(metrics.softmax(logits), yva, names)
    score, mal_idx = malignant_score(metrics.softmax(logits[clean], temperature), classes)
    refer_t = choose_refer_threshold(score, np.isin(yva[clean], mal_idx))
    fp32_metrics = full_metrics(logits, val_s, classes, temperature, args.abstain, clean, refer_t)
    fp32_metrics["temperature"] = temperature
    fp32_metrics["ece_15_before_calibration"] = m_raw["ece_15"]
    with torch.no_grad():
        tta = np.concatenate(
            [
                (
                    model(torch.from_numpy(xva[i : i + 32]))
                    + model(torch.flip(torch.from_numpy(xva[i : i + 32]), dims=[3]))
                ).numpy()
                / 2
                for i in range(0, len(xva), 32)
            ]
        )
    fp32_metrics["val_balanced_accuracy_flip_tta"] = metrics.summary(metrics.softmax(tta, temperature), yva, names)[
        "balanced_accuracy"
    ]
    print(
        f"fp32: refer threshold {refer_t:.4f}: {json.dumps({k: fp32_metrics['refer'][k] for k in ('sensitivity', 'specificity', 'benign_not_flagged')})}"
    )
    print(
        f"fp32: T={temperature:.3f} bal acc {fp32_metrics['val']['balanced_accuracy']:.4f} "
        f"ECE {m_raw['ece_15']:.4f} -> {fp32_metrics['val']['ece_15']:.4f}"
    )

    created = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    history = (run / "history.csv").read_text() if (run / "history.csv").exists() else ""
    # Manifest fields shared by the fp32 and int8 bundles (bundle.build_manifest makes model.json).
    common = {
        "architecture": ck["arch"],
        "classes": classes,
        "input": spec,
        "temperature": temperature,
        "abstain_threshold": args.abstain,
        "refer": refer_section(classes, mal_idx, refer_t, fp32_metrics["refer"]),
        "provenance": bundle.provenance(ck, run, args.data, args.command_line, created),
    }
    card = lambda m: model_card(m, history)  # noqa: E731
    cm_png = work / "confusion_fp32.png"
    plot_confusion(fp32_metrics["val"]["confusion_matrix"], names, cm_png, f"{name} fp32, val")
    bundle.write_bundle(out, fp32, dict(common, name=name, precision="fp32", metrics=fp32_metrics), card, cm_png)
    print(f"wrote {out}")
    dermcam = Path(args.dermcam) if args.dermcam else None
    if dermcam and dermcam.exists():
        device_eval(out, dermcam, args.data, history)
        print(f"{out}: val figures re-measured with {dermcam}")

    if args.no_int8:
        return
    calib_x = np.stack([data.preprocess_pil(data.load_rgb(s.path), spec) for s in calib_s])
    int8 = work / "model.int8.onnx"
    quantize_int8(fp32, int8, calib_x)
    q_logits = ort_logits(ort_session(int8), xva)
    q_metrics = full_metrics(q_logits, val_s, classes, temperature, args.abstain, clean, refer_t)
    q_metrics["temperature"] = temperature
    q_metrics["int8_vs_fp32"] = int8_vs_fp32(q_logits, logits, q_metrics, fp32_metrics, len(calib_s))
    print(
        f"int8: agreement {q_metrics['int8_vs_fp32']['top1_agreement']:.4f}, bal acc {q_metrics['val']['balanced_accuracy']:.4f}"
    )
    cm_png = work / "confusion_int8.png"
    plot_confusion(q_metrics["val"]["confusion_matrix"], names, cm_png, f"{name}-int8, val")
    qb = out.parent / (out.name + "-int8")
    bundle.write_bundle(qb, int8, dict(common, name=name + "-int8", precision="int8", metrics=q_metrics), card, cm_png)
    print(f"wrote {qb}")
    if dermcam and dermcam.exists():
        device_eval(qb, dermcam, args.data, history)
        print(f"{qb}: val figures re-measured with {dermcam}")
