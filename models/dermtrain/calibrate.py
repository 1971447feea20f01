"""Calibration on lesion-clean validation: the softmax temperature and the refer threshold (the
device applies the same rule: refer when the malignant classes' probabilities sum to >= t)."""

import numpy as np

from . import data, metrics

MALIGNANT_RISK = "malignant"
REFER_TARGET_SENSITIVITY = 0.95
BENIGN_FOR_REFER = {"melanocytic_nevus", "benign_keratosis", "dermatofibroma", "vascular_lesion"}


def fit_temperature(logits, y):
    """Minimise val NLL over T (golden-section search on log T)."""
    y = np.asarray(y)

    def nll(log_t):
        p = metrics.softmax(logits, float(np.exp(log_t)))
        return -np.mean(np.log(p[np.arange(len(y)), y] + 1e-12))

    a, b = np.log(0.05), np.log(20.0)
    g = (np.sqrt(5) - 1) / 2
    c, d = b - g * (b - a), a + g * (b - a)
    for _ in range(80):
        if nll(c) < nll(d):
            b = d
        else:
            a = c
        c, d = b - g * (b - a), a + g * (b - a)
    return float(np.exp((a + b) / 2))


def malignant_score(probs, classes):
    """The refer score: calibrated probability that the lesion is one of the malignant classes."""
    idx = [c["id"] for c in classes if c.get("risk") == MALIGNANT_RISK]
    return probs[:, idx].sum(axis=1), idx


def choose_refer_threshold(score, positive, target=REFER_TARGET_SENSITIVITY):
    """Largest threshold whose sensitivity on `positive` is still >= target (refer = score >= t)."""
    pos = np.sort(score[positive])
    if len(pos) == 0:
        raise data.DatasetError("no malignant images in the calibration set: cannot choose a refer threshold")
    # Flag at least ceil(target * n) positives: threshold at the k-th largest positive score.
    k = int(np.ceil(target * len(pos)))
    return float(pos[len(pos) - k])


def refer_figures(score, labels, names, threshold, malignant_idx, sources=None, archives=None):
    flagged = score >= threshold
    pos = np.isin(labels, malignant_idx)
    benign = np.isin(labels, [i for i, n in enumerate(names) if n in BENIGN_FOR_REFER])
    out = {
        "threshold": threshold,
        "sensitivity": float(flagged[pos].mean()) if pos.any() else None,
        "specificity": float((~flagged[~pos]).mean()) if (~pos).any() else None,
        "benign_not_flagged": float((~flagged[benign]).mean()) if benign.any() else None,
        "malignant_auc": metrics.auc_binary(score, pos),
        "flagged_rate_per_class": {
            names[c]: float(flagged[labels == c].mean()) for c in range(len(names)) if (labels == c).any()
        },
    }

    def per_group(keys):
        groups = {}
        for key in sorted(set(keys)):
            m = np.array([x == key for x in keys])
            groups[key] = {
                "n": int(m.sum()),
                "sensitivity": float(flagged[m & pos].mean()) if (m & pos).any() else None,
                "specificity": float((~flagged[m & ~pos]).mean()) if (m & ~pos).any() else None,
            }
        return groups

    if sources is not None:
        out["per_source"] = per_group(sources)
    if archives is not None:
        out["per_archive"] = per_group(archives)
    return out


def refer_section(classes, malignant_idx, threshold, figures):
    """The manifest's `refer` section: the rule the device applies and what it gave on val."""
    return {
        "classes": [classes[i]["folder"] for i in malignant_idx],
        "threshold": threshold,
        "target_sensitivity": REFER_TARGET_SENSITIVITY,
        "val_sensitivity": figures["sensitivity"],
        "val_specificity": figures["specificity"],
        "chosen_on": "lesion-clean val, fp32 through ONNX Runtime",
    }
