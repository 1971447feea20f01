"""Dataset reading (manifest.csv or class folders) and the inference preprocessing.

`preprocess_pil` is the reference the Rust device code is tested against (see the parity test),
so it is deliberately simple: one PIL bilinear resize of a centred crop box, then mean/std.
"""

import csv
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

HERE = Path(__file__).resolve().parent.parent
CLASSES_FILE = HERE / "classes.json"
# The repository sits beside shared/ (../shared/data/skin9 from the repo root).
DEFAULT_DATA = HERE.parent.parent / "shared" / "data" / "skin9"
# skin9-extra (HAM10000 melanomas and nevi) breaks skin9's archive = class shortcut.
DEFAULT_EXTRA = HERE.parent.parent / "shared" / "data" / "skin9-extra"
DEFAULT_DATASETS = [DEFAULT_DATA, DEFAULT_EXTRA]
IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]
IMAGE_EXTS = {".jpg", ".jpeg", ".png"}


class DatasetError(Exception):
    pass


def load_classes(path=CLASSES_FILE):
    with open(path) as f:
        classes = json.load(f)["classes"]
    for i, c in enumerate(classes):
        if c["id"] != i:
            raise DatasetError(f"{path}: class #{i} has id {c['id']}, ids must be 0..n-1 in order")
    return classes


@dataclass
class Sample:
    path: Path
    label: int
    split: str
    source: str
    archive: str = "unknown"
    lesion_id: str = ""


def read_dataset(root, classes):
    """Return all samples of a dataset folder; errors name the file and row."""
    root = Path(root)
    by_folder = {c["folder"]: c["id"] for c in classes}
    manifest = root / "manifest.csv"
    samples = []
    if manifest.exists():
        with open(manifest, newline="") as f:
            reader = csv.DictReader(f)
            missing = {"path", "class", "split"} - set(reader.fieldnames or [])
            if missing:
                raise DatasetError(f"{manifest}: missing column(s) {sorted(missing)}")
            for row_no, row in enumerate(reader, start=2):
                where = f"{manifest}:{row_no}"
                if not row.get("path") or not row.get("class") or not row.get("split"):
                    raise DatasetError(f"{where}: empty path, class or split")
                if row["class"] not in by_folder:
                    raise DatasetError(f"{where}: unknown class {row['class']!r}")
                p = root / row["path"]
                if not p.is_file():
                    raise DatasetError(f"{where}: image file {p} does not exist")
                samples.append(
                    Sample(
                        p,
                        by_folder[row["class"]],
                        row["split"],
                        row.get("source") or "unknown",
                        row.get("archive") or "unknown",
                        row.get("lesion_id") or "",
                    )
                )
    else:
        dirs = [d for d in sorted(root.iterdir()) if d.is_dir()] if root.is_dir() else None
        if not dirs:
            raise DatasetError(f"{root}: no manifest.csv and no class sub-folders")
        for d in dirs:
            if d.name not in by_folder:
                raise DatasetError(f"{d}: unknown class folder {d.name!r}")
            for p in sorted(d.rglob("*")):
                if p.suffix.lower() in IMAGE_EXTS:
                    samples.append(Sample(p, by_folder[d.name], "all", "unknown"))
    if not samples:
        raise DatasetError(f"{root}: dataset is empty")
    return samples


def read_datasets(roots, classes):
    """All samples of several dataset folders (e.g. skin9 + skin9-extra)."""
    out = []
    for r in roots:
        out += read_dataset(r, classes)
    return out


def first_per_class(samples, n, n_classes):
    """The first `n` samples of each class, in order (the tiny subsets of the smoke test)."""
    return [s for c in range(n_classes) for s in [x for x in samples if x.label == c][:n]]


def leaky_val(samples):
    """Val samples whose lesion also appears in train (same lesion, another photo)."""
    train_lesions = {s.lesion_id for s in samples if s.split == "train" and s.lesion_id}
    return {s.path for s in samples if s.split == "val" and s.lesion_id and s.lesion_id in train_lesions}


def crop_box(width, height, out_w, out_h, policy):
    """Source box (left, top, right, bottom) for the resize; shared definition with Rust."""
    if policy["kind"] == "squash":
        return (0.0, 0.0, float(width), float(height))
    frac = float(policy.get("crop_fraction", 1.0))
    target = out_w / out_h
    if width / height > target:
        ch = height * frac
        cw = ch * target
    else:
        cw = width * frac
        ch = cw / target
    left = (width - cw) / 2.0
    top = (height - ch) / 2.0
    return (left, top, left + cw, top + ch)


def load_rgb(path):
    with Image.open(path) as im:
        im.load()
        return to_rgb(im)


def to_rgb(im):
    """RGB with any transparency composited over white, as the device decodes a PNG (a viewer
    shows transparent pixels as the page, not as the colours they happen to hold)."""
    if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
        rgba = im.convert("RGBA")
        bg = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(bg, rgba).convert("RGB")
    return im.convert("RGB")


def resize_pil(img, input_spec):
    w, h = input_spec["width"], input_spec["height"]
    box = crop_box(img.width, img.height, w, h, input_spec["resize"])
    return img.resize((w, h), Image.BILINEAR, box=box)


def shades_of_gray_gains(arr, p):
    """Per-channel gains making each channel's p-norm the mean of the three (uint8 HxWx3 in)."""
    a = np.asarray(arr, dtype=np.float64).reshape(-1, 3)
    norm = np.power(np.mean(np.power(a, p), axis=0), 1.0 / p)
    return (norm.mean() / np.maximum(norm, 1e-6)).astype(np.float32)


def preprocess_pil(img, input_spec):
    """PIL RGB image -> float32 CHW tensor (numpy), exactly as at inference."""
    arr = np.asarray(resize_pil(img, input_spec), dtype=np.float32)
    cc = input_spec.get("colour_constancy")
    if cc is not None:
        if cc.get("kind") != "shades_of_gray":
            raise DatasetError(f"unknown colour_constancy {cc!r}")
        arr = np.minimum(arr * shades_of_gray_gains(arr.astype(np.uint8), float(cc["p"])), 255.0)
    arr = arr / 255.0
    mean = np.asarray(input_spec["mean"], dtype=np.float32)
    std = np.asarray(input_spec["std"], dtype=np.float32)
    arr = (arr - mean) / std
    return np.ascontiguousarray(arr.transpose(2, 0, 1))


def input_spec_for(size, shades_of_gray_p=None):
    """The bundle's `input` section; with a Shades of Gray exponent, colour constancy on the crop."""
    spec = {
        "width": size,
        "height": size,
        "channels": "RGB",
        "layout": "NCHW",
        "resize": {"kind": "center_crop", "crop_fraction": 1.0},
        "interpolation": "bilinear",
        "mean": IMAGENET_MEAN,
        "std": IMAGENET_STD,
    }
    if shades_of_gray_p:
        spec["colour_constancy"] = {"kind": "shades_of_gray", "p": float(shades_of_gray_p)}
    return spec
