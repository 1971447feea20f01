"""`parity`: the Python reference the Rust preprocessing parity test compares against."""

import json
from pathlib import Path

from . import data, metrics
from .bundle import read_manifest
from .onnx_export import ort_logits, ort_session


def parity(args):
    """Reference preprocessing for the Rust parity test: the resized uint8 image (PNG, lossless)
    and ORT's calibrated probabilities for the bundle."""
    man = read_manifest(args.bundle)
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
        entry = {"top1": int(probs.argmax()), "probabilities": [float(v) for v in probs]}
        if "ood" in man:  # the "not a lesion" score, same graph output the device reads
            entry["ood"] = float(sess.run([man["ood"]["output"]], {sess.get_inputs()[0].name: x})[0])
        ref["images"][Path(p).name] = entry
    (out / "reference.json").write_text(json.dumps(ref, indent=2) + "\n")
    print(f"wrote {out}")
