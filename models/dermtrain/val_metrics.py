"""Validation figures of an exported model (ONNX Runtime logits): overall, lesion-clean, per
archive, per source, dermoscopy only, the refer decision, and the confusion-matrix plot."""

import numpy as np

from . import metrics
from .calibrate import malignant_score, refer_figures

DERMOSCOPY_EXCLUDED = {"atopic_dermatitis", "tinea_ringworm_candidiasis"}  # clinical-photo classes


def per_group(probs, y, names, keys):
    """n, accuracy, balanced accuracy and per-class recall for each value of `keys`."""
    out = {}
    for k in sorted(set(keys)):
        m = np.array([x == k for x in keys])
        d = metrics.summary(probs[m], y[m], names)
        out[k] = {f: d[f] for f in ("n", "accuracy", "balanced_accuracy")}
        out[k]["recall"] = {p["class"]: p["recall"] for p in d["per_class"] if p["support"]}
    return out


def full_metrics(logits, samples, classes, temperature, abstain, clean=None, refer_threshold=None):
    names = [c["folder"] for c in classes]
    y = np.array([s.label for s in samples])
    probs = metrics.softmax(logits, temperature)
    out = {"val": metrics.summary(probs, y, names, abstain)}
    if clean is not None and (~clean).any():
        d = metrics.summary(probs[clean], y[clean], names, abstain)
        out["val_lesion_clean"] = {
            k: d[k] for k in ("n", "accuracy", "balanced_accuracy", "macro_f1", "macro_auc_ovr", "ece_15")
        }
        out["val_lesion_clean"]["per_class_recall"] = {p["class"]: p["recall"] for p in d["per_class"]}
    out["val_per_archive"] = per_group(probs, y, names, [s.archive for s in samples])
    if refer_threshold is not None:
        score, idx = malignant_score(probs, classes)
        out["refer"] = refer_figures(score, y, names, refer_threshold, idx, [s.source for s in samples])
    out["val"]["melanoma_recall"] = next(p["recall"] for p in out["val"]["per_class"] if p["class"] == "melanoma")
    derm = np.array([names[s.label] not in DERMOSCOPY_EXCLUDED for s in samples])
    if derm.any():
        d = metrics.summary(probs[derm], y[derm], names)
        out["val_dermoscopy_only"] = {k: d[k] for k in ("n", "accuracy", "balanced_accuracy", "macro_f1")}
    out["val_per_source"] = per_group(probs, y, names, [s.source for s in samples])
    return out


def plot_confusion(cm, names, path, title):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cm = np.asarray(cm, dtype=float)
    norm = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(8, 7))
    ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    for i in range(len(names)):
        for j in range(len(names)):
            ax.text(
                j,
                i,
                int(cm[i, j]),
                ha="center",
                va="center",
                color="white" if norm[i, j] > 0.5 else "black",
                fontsize=8,
            )
    ax.set_xticks(range(len(names)))
    ax.set_xticklabels(names, rotation=60, ha="right", fontsize=8)
    ax.set_yticks(range(len(names)))
    ax.set_yticklabels(names, fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
