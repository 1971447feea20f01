"""`tta-check`: does test-time augmentation buy a better referral? A bundle's logits on
lesion-clean val averaged over no view, the horizontal flip (what the device's freeze uses) and
the eight flips/rotations of the square (dihedral group), scored for balanced accuracy, ECE,
malignant-score AUC and the referral's specificity at the bundle's own threshold and at a
threshold re-chosen on half of val and measured on the other half (no retraining)."""

import json
from pathlib import Path

import numpy as np

from . import data, metrics
from .calibrate import choose_refer_threshold, malignant_score, refer_figures
from .onnx_export import ort_session
from .train import eval_tensors


def dihedral_views(x):
    """The eight images a square can become by flips and quarter turns, of an NCHW batch."""
    t = np.swapaxes(x, 2, 3)
    out = []
    for base in (x, t):
        for flip_h in (False, True):
            for flip_v in (False, True):
                v = base[:, :, ::-1, :] if flip_v else base
                v = v[:, :, :, ::-1] if flip_h else v
                out.append(np.ascontiguousarray(v))
    return out


def split_half(score, positive, halves=20, target=None):
    """Mean (sensitivity, specificity) when the refer threshold is chosen on a random half and
    applied to the other half, both ways, over `halves` random splits: an operating point not
    measured on the images that chose it. Halves without a positive or a negative are skipped;
    (None, None) when every split was."""
    kw = {} if target is None else {"target": target}
    got = []
    for seed in range(halves):
        a = np.random.default_rng(seed).random(len(score)) < 0.5
        for fit, test in ((a, ~a), (~a, a)):
            if not (positive[fit].any() and positive[test].any() and (~positive[test]).any()):
                continue
            t = choose_refer_threshold(score[fit], positive[fit], **kw)
            flagged = score[test] >= t
            got.append((flagged[positive[test]].mean(), (~flagged[~positive[test]]).mean()))
    if not got:
        return None, None
    sens, spec = np.mean(got, axis=0)
    return float(sens), float(spec)


def _f(v):
    return "n/a" if v is None else f"{v:.3f}"


def tta_check_cmd(args):
    from .bundle import read_manifest
    from .ood import lesion_splits

    man = read_manifest(args.bundle)
    classes, _, val = lesion_splits(args.data)
    names = [c["folder"] for c in classes]
    if args.limit_per_class:
        val = data.first_per_class(val, args.limit_per_class, len(classes))
    y = np.array([s.label for s in val])
    sources, archives = [s.source for s in val], [s.archive for s in val]
    x = eval_tensors(val, man["input"], args.threads or 2).numpy()
    sess = ort_session(Path(args.bundle) / "model.onnx", args.threads)
    name = sess.get_inputs()[0].name
    views = [
        np.concatenate([sess.run(None, {name: v[i : i + 1]})[0] for i in range(len(v))]) for v in dihedral_views(x)
    ]
    # dihedral_views order: identity first, the horizontal flip second.
    modes = {"none": views[0], "flip": (views[0] + views[2]) / 2, "dihedral8": sum(views) / len(views)}
    threshold = man["refer"]["threshold"]
    out = {"bundle": man["name"], "images": len(val), "refer_threshold": threshold, "modes": {}}
    for mode, logits in modes.items():
        probs = metrics.softmax(logits, man["temperature"])
        s = metrics.summary(probs, y, names)
        score, idx = malignant_score(probs, classes)
        # The bundle's own threshold: the same figures export and the model cards report,
        # per source and per archive too.
        at = refer_figures(score, y, names, threshold, idx, sources, archives)
        sens, spec = split_half(score, np.isin(y, idx))
        out["modes"][mode] = row = {
            "balanced_accuracy": s["balanced_accuracy"],
            "ece": s["ece_15"],
            "bundle_threshold": at,
            "split_half": {"sensitivity": sens, "specificity": spec},
        }
        groups = "; ".join(
            f"{k} (n={g['n']}) {_f(g['sensitivity'])}/{_f(g['specificity'])}"
            for k, g in {**at["per_source"], **at["per_archive"]}.items()
        )
        print(
            f"{mode:9s} bal acc {row['balanced_accuracy']:.3f}  ECE {row['ece']:.3f}  AUC {at['malignant_auc']:.3f}  "
            f"bundle threshold sens/spec {at['sensitivity']:.3f}/{at['specificity']:.3f}"
            + (f"  split-half {sens:.3f}/{spec:.3f}" if sens is not None else "  split-half: too few images")
            + f"\n          per source / archive (sens/spec): {groups}",
            flush=True,
        )
    print(json.dumps(out))
