"""Classification metrics shared by training, export and the model card (same definitions as
`dermcam eval`: balanced accuracy = mean per-class recall over classes with support)."""

import numpy as np


def softmax(logits, temperature=1.0):
    z = np.asarray(logits, dtype=np.float64) / temperature
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def confusion(y, pred, n):
    cm = np.zeros((n, n), dtype=np.int64)
    for t, p in zip(y, pred):
        cm[t, p] += 1
    return cm


def ece(probs, y, bins=15):
    conf = probs.max(axis=1)
    correct = probs.argmax(axis=1) == np.asarray(y)
    total = 0.0
    edges = np.linspace(0.0, 1.0, bins + 1)
    for lo, hi in zip(edges[:-1], edges[1:]):
        m = (conf > lo) & (conf <= hi)
        if m.any():
            total += m.mean() * abs(conf[m].mean() - correct[m].mean())
    return float(total)


def auc_binary(scores, positives):
    """ROC AUC by the rank statistic (ties get half credit)."""
    pos = scores[positives]
    neg = scores[~positives]
    if len(pos) == 0 or len(neg) == 0:
        return float("nan")
    order = np.argsort(np.concatenate([pos, neg]), kind="mergesort")
    allv = np.concatenate([pos, neg])[order]
    ranks = np.empty(len(allv))
    i = 0
    while i < len(allv):
        j = i
        while j + 1 < len(allv) and allv[j + 1] == allv[i]:
            j += 1
        ranks[i : j + 1] = (i + j) / 2.0 + 1
        i = j + 1
    r = np.empty(len(allv))
    r[order] = ranks
    rpos = r[: len(pos)].sum()
    return float((rpos - len(pos) * (len(pos) + 1) / 2.0) / (len(pos) * len(neg)))


def summary(probs, y, class_names, abstain=None):
    y = np.asarray(y)
    n = len(class_names)
    pred = probs.argmax(axis=1)
    cm = confusion(y, pred, n)
    support = cm.sum(axis=1)
    tp = np.diag(cm)
    with np.errstate(invalid="ignore", divide="ignore"):
        recall = np.where(support > 0, tp / np.maximum(support, 1), np.nan)
        predicted = cm.sum(axis=0)
        precision = np.where(predicted > 0, tp / np.maximum(predicted, 1), 0.0)
        f1 = np.where(
            precision + np.nan_to_num(recall) > 0,
            2 * precision * np.nan_to_num(recall) / (precision + np.nan_to_num(recall) + 1e-12),
            0.0,
        )
    aucs = [auc_binary(probs[:, c], y == c) for c in range(n) if support[c] > 0]
    out = {
        "n": int(len(y)),
        "accuracy": float((pred == y).mean()),
        "balanced_accuracy": float(np.nanmean(recall[support > 0])),
        "macro_f1": float(np.mean(f1[support > 0])),
        "macro_auc_ovr": float(np.nanmean(aucs)) if aucs else float("nan"),
        "ece_15": ece(probs, y),
        "per_class": [
            {
                "class": class_names[c],
                "precision": float(precision[c]),
                "recall": float(np.nan_to_num(recall[c])),
                "f1": float(f1[c]),
                "support": int(support[c]),
            }
            for c in range(n)
        ],
        "confusion_matrix": cm.tolist(),
    }
    if abstain is not None:
        out["abstain_rate"] = float((probs.max(axis=1) < abstain).mean())
    return out
