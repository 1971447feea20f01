"""Export a trained run to dermcam bundles: ONNX fp32 + static int8 (QDQ), temperature
calibration, validation metrics, manifest (model.json) and MODEL_CARD.md."""
import datetime
import hashlib
import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import numpy as np
import torch

from . import data, metrics, nets
from .card import device_eval, model_card

SCHEMA_VERSION = 1
DERMOSCOPY_EXCLUDED = {"atopic_dermatitis", "tinea_ringworm_candidiasis"}  # clinical-photo classes


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def git_commit():
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, cwd=data.HERE, check=True)
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "dermtrain"], capture_output=True, text=True,
                               cwd=data.HERE).stdout.strip()
        return out.stdout.strip() + ("-dirty" if dirty else "")
    except Exception:
        return "unknown"


def ort_session(path, threads=0):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def ort_logits(sess, x):
    name = sess.get_inputs()[0].name
    return np.concatenate([sess.run(None, {name: x[i : i + 1]})[0] for i in range(len(x))])


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


MALIGNANT_RISK = "malignant"
REFER_TARGET_SENSITIVITY = 0.95
BENIGN_FOR_REFER = {"melanocytic_nevus", "benign_keratosis", "dermatofibroma", "vascular_lesion"}


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


def refer_figures(score, labels, names, threshold, malignant_idx, sources=None):
    flagged = score >= threshold
    pos = np.isin(labels, malignant_idx)
    benign = np.isin(labels, [i for i, n in enumerate(names) if n in BENIGN_FOR_REFER])
    out = {"threshold": threshold,
           "sensitivity": float(flagged[pos].mean()) if pos.any() else None,
           "specificity": float((~flagged[~pos]).mean()) if (~pos).any() else None,
           "benign_not_flagged": float((~flagged[benign]).mean()) if benign.any() else None,
           "malignant_auc": metrics.auc_binary(score, pos),
           "flagged_rate_per_class": {names[c]: float(flagged[labels == c].mean()) for c in range(len(names)) if (labels == c).any()}}
    if sources is not None:
        out["per_source"] = {}
        for src in sorted(set(sources)):
            m = np.array([x == src for x in sources])
            out["per_source"][src] = {"n": int(m.sum()),
                                      "sensitivity": float(flagged[m & pos].mean()) if (m & pos).any() else None,
                                      "specificity": float((~flagged[m & ~pos]).mean()) if (m & ~pos).any() else None}
    return out


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
        out["val_lesion_clean"] = {k: d[k] for k in ("n", "accuracy", "balanced_accuracy", "macro_f1", "macro_auc_ovr", "ece_15")}
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
            ax.text(j, i, int(cm[i, j]), ha="center", va="center", color="white" if norm[i, j] > 0.5 else "black", fontsize=8)
    ax.set_xticks(range(len(names))); ax.set_xticklabels(names, rotation=60, ha="right", fontsize=8)
    ax.set_yticks(range(len(names))); ax.set_yticklabels(names, fontsize=8)
    ax.set_xlabel("predicted"); ax.set_ylabel("true"); ax.set_title(title)
    fig.tight_layout(); fig.savefig(path, dpi=90); plt.close(fig)


class CalibReader:
    def __init__(self, x, name):
        self.it = iter([{name: x[i : i + 1]} for i in range(len(x))])

    def get_next(self):
        return next(self.it, None)


def quantize_int8(fp32_path, int8_path, calib_x):
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    import onnx

    pre = int8_path.with_suffix(".pre.onnx")
    quant_pre_process(str(fp32_path), str(pre), skip_symbolic_shape=True)
    name = ort_session(pre).get_inputs()[0].name
    # Depthwise convolutions stay float: per-channel 7-bit depthwise kernels cost EfficientNet-
    # Lite0 v2 most of its int8 error (val top-1 agreement 0.91 -> 0.93 without them), and they
    # hold a tiny share of the weights.
    depthwise = [n.name for n in onnx.load(str(pre)).graph.node
                 if n.op_type == "Conv" and any(a.name == "group" and a.i > 1 for a in n.attribute)]
    quantize_static(str(pre), str(int8_path), CalibReader(calib_x, name), quant_format=QuantFormat.QDQ,
                    nodes_to_exclude=depthwise,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, per_channel=True,
                    # 7-bit weights: ORT's u8s8 kernels saturate on x86 without VNNI (AVX2/AVX-512),
                    # which made ORT int8 disagree with fp32 on 23 % of val images here while
                    # tract (QDQ run in float) agreed; reduce_range keeps both runtimes faithful.
                    reduce_range=True,
                    calibrate_method=CalibrationMethod.MinMax)
    pre.unlink()


def write_bundle(folder, onnx_src, manifest, card, cm_png):
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(onnx_src, folder / "model.onnx")
    manifest = dict(manifest, sha256=sha256(folder / "model.onnx"))
    with open(folder / "model.json", "w") as f:
        json.dump(manifest, f, indent=2)
        f.write("\n")
    shutil.copyfile(cm_png, folder / "confusion_matrix.png")
    (folder / "MODEL_CARD.md").write_text(card(manifest))


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
    spec = data.input_spec_for(size)
    samples = data.read_datasets(args.data, classes)
    leaky = data.leaky_val(samples)
    val_s = [s for s in samples if s.split == "val"]
    train_s = [s for s in samples if s.split == "train"]
    if args.limit_per_class:
        val_s = [s for c in range(len(classes)) for s in [v for v in val_s if v.label == c][: args.limit_per_class]]
    clean = np.array([s.path not in leaky for s in val_s])
    rng = np.random.default_rng(0)
    calib_s = [train_s[i] for i in rng.choice(len(train_s), min(args.calib_images, len(train_s)), replace=False)]
    xva = np.stack([data.preprocess_pil(data.load_rgb(s.path), spec) for s in val_s])
    yva = np.array([s.label for s in val_s])

    bundle = Path(args.bundle)
    name = args.name or bundle.name
    work = run / "export"
    work.mkdir(exist_ok=True)
    fp32 = work / "model.onnx"
    torch.onnx.export(model, torch.zeros(1, 3, size, size), str(fp32), opset_version=13,
                      input_names=["input"], output_names=["logits"], do_constant_folding=True)

    # ORT must reproduce PyTorch on real images before anything ships.
    sess = ort_session(fp32)
    k = min(16, len(xva))
    with torch.no_grad():
        pt = model(torch.from_numpy(xva[:k])).numpy()
    diff = float(np.abs(ort_logits(sess, xva[:k]) - pt).max())
    print(f"ORT vs PyTorch max |logit diff| on {k} val images: {diff:.2e} (bound 1e-3)")
    assert diff <= 1e-3, f"ONNX export disagrees with PyTorch: {diff}"

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
        tta = np.concatenate([(model(torch.from_numpy(xva[i:i+32])) + model(torch.flip(torch.from_numpy(xva[i:i+32]), dims=[3]))).numpy() / 2
                              for i in range(0, len(xva), 32)])
    fp32_metrics["val_balanced_accuracy_flip_tta"] = metrics.summary(metrics.softmax(tta, temperature), yva, names)["balanced_accuracy"]
    print(f"fp32: refer threshold {refer_t:.4f}: {json.dumps({k: fp32_metrics['refer'][k] for k in ('sensitivity', 'specificity', 'benign_not_flagged')})}")
    print(f"fp32: T={temperature:.3f} bal acc {fp32_metrics['val']['balanced_accuracy']:.4f} "
          f"ECE {m_raw['ece_15']:.4f} -> {fp32_metrics['val']['ece_15']:.4f}")

    created = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    history = (run / "history.csv").read_text() if (run / "history.csv").exists() else ""
    provenance = {
        "dataset": " + ".join(Path(d).name for d in args.data),
        "train_split": "train" + (f" minus {ck['holdout']}" if ck.get("holdout") else ""),
        "selected_and_calibrated_on": "val minus the images whose lesion also appears in train (lesion-clean val)",
        "init": ck.get("init"),
        "recipe": ck.get("recipe"),
        "recipe_params": ck.get("recipe_params"),
        "teacher": ck.get("teacher"),
        "best_epoch": ck.get("epoch"),
        "seed": ck.get("seed"),
        "training_command": (run / "command.txt").read_text().strip() if (run / "command.txt").exists() else None,
        "export_command": args.command_line,
        "git_commit": git_commit(),
        "created": created,
    }
    base = {
        "schema_version": SCHEMA_VERSION,
        "architecture": ck["arch"],
        "classes": classes,
        "input": spec,
        "output": {"kind": "logits"},
        "temperature": temperature,
        "abstain_threshold": args.abstain,
        "refer": {
            "classes": [classes[i]["folder"] for i in mal_idx],
            "threshold": refer_t,
            "target_sensitivity": REFER_TARGET_SENSITIVITY,
            "val_sensitivity": fp32_metrics["refer"]["sensitivity"],
            "val_specificity": fp32_metrics["refer"]["specificity"],
            "chosen_on": "lesion-clean val, fp32 through ONNX Runtime",
        },
        "provenance": provenance,
    }
    cm_png = work / "confusion_fp32.png"
    plot_confusion(fp32_metrics["val"]["confusion_matrix"], names, cm_png, f"{name} fp32, val")
    write_bundle(bundle, fp32, dict(base, name=name, precision="fp32", metrics=fp32_metrics),
                 lambda m: model_card(m, history), cm_png)
    print(f"wrote {bundle}")
    dermcam = Path(args.dermcam) if args.dermcam else None
    if dermcam and dermcam.exists():
        device_eval(bundle, dermcam, args.data, history)
        print(f"{bundle}: val figures re-measured with {dermcam}")

    if args.no_int8:
        return
    calib_x = np.stack([data.preprocess_pil(data.load_rgb(s.path), spec) for s in calib_s])
    int8 = work / "model.int8.onnx"
    quantize_int8(fp32, int8, calib_x)
    q_logits = ort_logits(ort_session(int8), xva)
    q_metrics = full_metrics(q_logits, val_s, classes, temperature, args.abstain, clean, refer_t)
    q_metrics["temperature"] = temperature
    agree = float((q_logits.argmax(1) == logits.argmax(1)).mean())
    q_metrics["int8_vs_fp32"] = {
        "top1_agreement": agree,
        "balanced_accuracy_delta": q_metrics["val"]["balanced_accuracy"] - fp32_metrics["val"]["balanced_accuracy"],
        "max_abs_logit_diff": float(np.abs(q_logits - logits).max()),
        "calibration_images": len(calib_s),
    }
    print(f"int8: agreement {agree:.4f}, bal acc {q_metrics['val']['balanced_accuracy']:.4f}")
    cm_png = work / "confusion_int8.png"
    plot_confusion(q_metrics["val"]["confusion_matrix"], names, cm_png, f"{name}-int8, val")
    qb = bundle.parent / (bundle.name + "-int8")
    write_bundle(qb, int8, dict(base, name=name + "-int8", precision="int8", metrics=q_metrics),
                 lambda m: model_card(m, history), cm_png)
    print(f"wrote {qb}")
    if dermcam and dermcam.exists():
        device_eval(qb, dermcam, args.data, history)
        print(f"{qb}: val figures re-measured with {dermcam}")


def ort_bench(args):
    for b in args.bundles:
        man = json.loads((Path(b) / "model.json").read_text())
        x = np.random.default_rng(0).standard_normal((1, 3, man["input"]["height"], man["input"]["width"])).astype(np.float32)
        for th in args.threads:
            sess = ort_session(Path(b) / "model.onnx", th)
            name = sess.get_inputs()[0].name
            for _ in range(5):
                sess.run(None, {name: x})
            ts = []
            for _ in range(args.iterations):
                t0 = time.perf_counter(); sess.run(None, {name: x}); ts.append((time.perf_counter() - t0) * 1e3)
            ts.sort()
            print(json.dumps({"bundle": man["name"], "runtime": "onnxruntime", "threads": th or os.cpu_count(),
                              "p50_ms": ts[len(ts) // 2], "p90_ms": ts[int(len(ts) * 0.9)]}))


def parity(args):
    """Reference preprocessing for the Rust parity test: the resized uint8 image (PNG, lossless)
    and ORT's calibrated probabilities for the bundle."""
    from PIL import Image

    man = json.loads((Path(args.bundle) / "model.json").read_text())
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    sess = ort_session(Path(args.bundle) / "model.onnx")
    ref = {"bundle": man["name"], "sha256": man["sha256"], "images": {}}
    for p in args.images:
        img = data.load_rgb(p)
        data.resize_pil(img, man["input"]).save(out / (Path(p).stem + ".resized.png"))
        x = data.preprocess_pil(img, man["input"])[None]
        lo = ort_logits(sess, x)
        probs = metrics.softmax(lo, man["temperature"])[0]
        ref["images"][Path(p).name] = {"top1": int(probs.argmax()), "probabilities": [float(v) for v in probs]}
    (out / "reference.json").write_text(json.dumps(ref, indent=2) + "\n")
    print(f"wrote {out}")
