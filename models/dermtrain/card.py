"""MODEL_CARD.md from a bundle manifest: the figures a bundle ships with (the appliance's own once
device_eval has run), on lesion-grouped validation, per source, per archive, with the refer
decision and the shortcut checks (leave-one-archive-out, archive probe)."""

import json


def _f(v, d=4):
    return "n/a" if v is None else f"{v:.{d}f}"


def model_card(m, history):
    v = m["metrics"]["val"]
    mm = m["metrics"]
    p = m["provenance"]
    refer = m.get("refer") or {}
    on_device = "measured_with" in mm
    lines = [
        f"# Model card: {m['name']}",
        "",
        "**Research and education software, not a medical device.** Not for diagnosis, screening or",
        "treatment decisions. Trained on small public image sets with known biases (below).",
        "",
        "## Summary",
        f"- Architecture: {m['architecture']} ({m['precision']}), input {m['input']['width']}x{m['input']['height']} RGB, "
        f"centred square crop, bilinear resize, ImageNet mean/std. Output: 9 logits; softmax with temperature "
        f'{m["temperature"]:.3f} applied on the device; results under {m["abstain_threshold"]:.2f} are shown as "uncertain".',
        f"- Refer flag: a clinician should see the lesion when P({' + '.join(refer.get('classes', []))}) >= "
        f"{_f(refer.get('threshold'))} (chosen on {refer.get('chosen_on', 'validation')} for sensitivity >= "
        f"{_f(refer.get('target_sensitivity'), 2)}; it gave sensitivity {_f(refer.get('val_sensitivity'))}, "
        f"specificity {_f(refer.get('val_specificity'))} there)."
        if refer
        else "- Refer flag: no calibrated threshold.",
        f"- Initial weights: {p['init']}.",
        f"- Recipe: `{p['recipe']}` {json.dumps(p['recipe_params'])}"
        + (f"; knowledge distillation from `{p['teacher']}`" if p.get("teacher") else ""),
        f"- Training data: {p['dataset']} ({p['train_split']} split); selection, temperature and refer threshold on "
        f"{p['selected_and_calibrated_on']}. Best epoch {p['best_epoch']}, seed {p['seed']}.",
        f"- Training command: `{p['training_command']}`",
        f"- Export command: `{p['export_command']}`",
        f"- Toolchain commit: `{p['git_commit']}`; created {p['created']}; model.onnx sha256 `{m['sha256']}`.",
        "",
        "## Intended use",
        "Demonstrating an edge image-classification appliance (dermcam) for teaching and research. It names which of",
        "nine skin-condition classes an image most resembles and whether a clinician should see it. It must not be",
        "used on patients.",
        "",
        "## Data and licence",
        "skin9 (1,744 images: ISIC Archive dermoscopy, CC BY-NC 4.0 / per-image ISIC licences, plus web clinical photos",
        "of unclear copyright) and skin9-extra (1,607 HAM10000 melanomas and nevi, CC BY-NC 4.0). Non-commercial research",
        "use only; attribution: HAM10000 (Tschandl et al. 2018), ISIC 2018 (Codella et al.), BCN20000 (Combalia et al.),",
        "the ISIC archive. The model and its figures inherit that licence.",
        "",
        "## Validation figures (val of skin9 + skin9-extra)",
        (
            "Measured with the appliance itself (tract, Rust preprocessing). Reproduce from the repository root:\n"
            "`cargo run --release -- eval ../shared/data/skin9 ../shared/data/skin9-extra --split val --model models/"
            + m["name"]
            + "`"
        )
        if on_device
        else "Measured with ONNX Runtime in the toolchain (dermcam eval was not run).",
        "",
        "| metric | all val | lesion-clean val |",
        "|---|---|---|",
    ]
    c = mm.get("val_lesion_clean") or {}
    lines += [
        f"| images | {v['n']} | {c.get('n', 'n/a')} |",
        f"| accuracy | {v['accuracy']:.4f} | {_f(c.get('accuracy'))} |",
        f"| balanced accuracy | {v['balanced_accuracy']:.4f} | {_f(c.get('balanced_accuracy'))} |",
        f"| melanoma recall | {_f(v.get('melanoma_recall'))} | {_f((c.get('recall') or c.get('per_class_recall') or {}).get('melanoma'))} |",
        f"| SCC recall | {_f(next((x['recall'] for x in v['per_class'] if x['class'] == 'squamous_cell_carcinoma'), None))} | "
        f"{_f((c.get('recall') or c.get('per_class_recall') or {}).get('squamous_cell_carcinoma'))} |",
        f"| macro F1 | {v['macro_f1']:.4f} | |",
        f"| macro one-vs-rest AUC | {v['macro_auc_ovr']:.4f} | |",
        f"| ECE (15 bins, calibrated) | {v['ece_15']:.4f} | |",
        f"| abstain rate (p < {m['abstain_threshold']:.2f}) | {v.get('abstain_rate', float('nan')):.4f} | |",
    ]
    if "ece_15_before_calibration" in mm:
        lines.append(f"| ECE before temperature scaling (ONNX Runtime) | {mm['ece_15_before_calibration']:.4f} | |")
    if "val_balanced_accuracy_flip_tta" in mm:
        lines.append(
            f"| balanced accuracy with flip TTA (PyTorch fp32) | {mm['val_balanced_accuracy_flip_tta']:.4f} | |"
        )
    if "val_onnxruntime" in mm:
        o = mm["val_onnxruntime"]
        lines.append(
            f"| same split through ONNX Runtime + PIL preprocessing: balanced accuracy | {o['balanced_accuracy']:.4f} | |"
        )
    if "int8_vs_fp32" in mm:
        q = mm["int8_vs_fp32"]
        lines.append(f"| int8 vs fp32 top-1 agreement (ONNX Runtime, val) | {q['top1_agreement']:.4f} | |")
        lines.append(f"| int8 − fp32 balanced accuracy (ONNX Runtime, val) | {q['balanced_accuracy_delta']:+.4f} | |")
    lines.append("")
    lines.append("`lesion-clean` leaves out the val images whose lesion also appears in train (59 in skin9's val).")
    for title, key in (("source", "val_per_source"), ("archive (image collection)", "val_per_archive")):
        if mm.get(key):
            lines += [
                "",
                f"### Per {title}",
                "",
                "| group | n | accuracy | balanced accuracy | recall per class |",
                "|---|---|---|---|---|",
            ]
            for g, d in mm[key].items():
                rec = ", ".join(f"{k} {x:.2f}" for k, x in (d.get("recall") or {}).items())
                lines.append(f"| `{g}` | {d['n']} | {d['accuracy']:.4f} | {d['balanced_accuracy']:.4f} | {rec} |")
    r = mm.get("refer")
    if r:
        lines += [
            "",
            "### Refer decision (all val)",
            "",
            f"Threshold {_f(r.get('threshold'))} on P({' + '.join(r.get('classes', refer.get('classes', [])))}). "
            "ROC curve with the operating point: `refer_roc.png`.",
            "",
            "| metric | value |",
            "|---|---|",
            f"| sensitivity (melanoma + SCC flagged) | {_f(r.get('sensitivity'))} |",
            f"| specificity (all other classes not flagged) | {_f(r.get('specificity'))} |",
            f"| benign lesions (nevus, BKL, DF, vascular) not flagged | {_f(r.get('benign_not_flagged'))} |",
            f"| malignant-score ROC AUC | {_f(r.get('auc') if 'auc' in r else r.get('malignant_auc'))} |",
            "",
            "| class | flagged |",
            "|---|---|",
        ]
        for k, x in (r.get("flagged_per_class") or r.get("flagged_rate_per_class") or {}).items():
            lines.append(f"| {k} | {x:.3f} |")
        lines += ["", "| source / archive | n | sensitivity | specificity |", "|---|---|---|---|"]
        for k, d in list((r.get("per_source") or {}).items()) + list((r.get("per_archive") or {}).items()):
            lines.append(f"| `{k}` | {d['n']} | {_f(d.get('sensitivity'))} | {_f(d.get('specificity'))} |")
    lines += [
        "",
        "### Per class (all val)",
        "",
        "| class | precision | recall | F1 | support |",
        "|---|---|---|---|---|",
    ]
    for pc in v["per_class"]:
        lines.append(
            f"| {pc['class']} | {pc['precision']:.3f} | {pc['recall']:.3f} | {pc['f1']:.3f} | {pc['support']} |"
        )
    lines += ["", "Confusion matrix (rows true, columns predicted): `confusion_matrix.png`.", ""]
    checks = mm.get("shortcut_checks")
    if checks:
        lines += ["## Shortcut checks (does it look at the lesion or at the photo's origin?)", ""]
        for h in checks.get("leave_one_archive_out", []):
            lines.append(
                f"- Leave-one-archive-out `{h['holdout']}`: a {h['arch']} trained without those images calls "
                f"{h['recall']:.1%} of the {h['n']} of them correctly (predicted as: {json.dumps(h['predicted_as'])}); "
                f"trained with them, this bundle's recall on the same kind of val images is given in the per-archive table."
            )
        for pr in checks.get("archive_probe", []):
            lines.append(
                f"- Archive probe ({pr['model']}): grouped 5-fold logistic regression on penultimate features, "
                f"melanomas + nevi ({pr['images']} images): archive AUC {pr['archive_probe']['auc']:.3f}, "
                f"class (melanoma vs nevus) AUC {pr['class_probe']['auc']:.3f}."
            )
        if checks.get("note"):
            lines.append(f"- {checks['note']}")
        lines.append("")
    lines += [
        "## Known weaknesses",
        "- Two classes (atopic dermatitis, tinea) are clinical photos and the rest dermoscopy: photo type alone",
        "  separates them, so their high scores say little about dermatology.",
        "- Tinea (44 train / 10 val) and atopic dermatitis (56 / 12) are tiny; their figures swing by 10 points per image.",
        "- Melanoma vs nevus on 150-px HAM10000 squares is hard at this size; SCC vs actinic keratosis is the",
        "  weakest pair. The refer threshold buys its sensitivity with many benign lesions flagged (see the refer table).",
        "- Val was used for model selection, temperature and the refer threshold: the figures are optimistic.",
        "  The independent test sets were never seen.",
        "- Every training photo is dermoscopy or a web clinical photo; a phone or webcam photo of a lesion is unlike",
        "  both. Skin tones: ISIC dermoscopy is predominantly light skin; performance on darker skin is unknown.",
        "",
    ]
    if history:
        lines += [
            "## Training history (history.csv; val_bal_acc = lesion-clean val, the selection metric)",
            "",
            "```",
            history.strip(),
            "```",
            "",
        ]
    return "\n".join(lines)
