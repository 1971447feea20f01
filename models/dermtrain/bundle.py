"""Bundle writing and the bundle manifest (model.json): the Python twin of the Rust
`src/model/manifest.rs`. `build_manifest` is the one place a manifest is made; `write_bundle`
(export) and `update_manifest` (device re-measurement) are the only writers of model.json, and
both go through it, so every manifest the toolchain ships passes the device's checks."""

import hashlib
import json
import math
import shutil
import struct
import subprocess
from pathlib import Path

from . import data

MANIFEST = "model.json"
SCHEMA_VERSION = 1
# Key order of the shipped bundles (kept, so a rewritten manifest diffs cleanly).
FIELDS = (
    "schema_version",
    "architecture",
    "classes",
    "input",
    "output",
    "temperature",
    "abstain_threshold",
    "refer",
    "provenance",
    "name",
    "precision",
    "metrics",
    "sha256",
    "ood",
    "cam",
)
PRECISIONS = ("fp32", "int8", "f16")
RISKS = ("malignant", "pre-malignant", "benign", "inflammatory", "infectious")
CLASS_KEYS = {"id", "folder", "name", "risk"}
INPUT_KEYS = {"width", "height", "channels", "layout", "resize", "interpolation", "mean", "std"}


class ManifestError(ValueError):
    pass


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def git_commit():
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, cwd=data.HERE, check=True)
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "dermtrain"], capture_output=True, text=True, cwd=data.HERE
        ).stdout.strip()
        return out.stdout.strip() + ("-dirty" if dirty else "")
    except Exception:
        return "unknown"


def provenance(ck, run, data_dirs, export_command, created):
    """Where a bundle comes from: data, split, recipe, commands, commit (kept verbatim by the device)."""
    run = Path(run)
    return {
        "dataset": " + ".join(Path(d).name for d in data_dirs),
        "train_split": "train" + (f" minus {ck['holdout']}" if ck.get("holdout") else ""),
        "selected_and_calibrated_on": "val minus the images whose lesion also appears in train (lesion-clean val)",
        "init": ck.get("init"),
        "recipe": ck.get("recipe"),
        "recipe_params": ck.get("recipe_params"),
        "teacher": ck.get("teacher"),
        "best_epoch": ck.get("epoch"),
        "seed": ck.get("seed"),
        "training_command": (run / "command.txt").read_text().strip() if (run / "command.txt").exists() else None,
        "export_command": export_command,
        "git_commit": git_commit(),
        "created": created,
    }


def build_manifest(
    *,
    name,
    architecture,
    precision,
    classes,
    input,
    temperature,
    abstain_threshold,
    sha256,
    provenance,
    metrics,
    refer=None,
    output=None,
    ood=None,
    cam=None,
    schema_version=SCHEMA_VERSION,
):
    """The bundle manifest, checked as `Manifest::parse` checks it on the device."""
    m = {
        "schema_version": schema_version,
        "architecture": architecture,
        "classes": classes,
        "input": input,
        "output": output if output is not None else {"kind": "logits"},
        "temperature": temperature,
        "abstain_threshold": abstain_threshold,
        "refer": refer,
        "provenance": provenance,
        "name": name,
        "precision": precision,
        "metrics": metrics if metrics is not None else {},
        "sha256": sha256,
    }
    if refer is None:
        del m["refer"]  # optional on the device (bundles from before the refer decision)
    if ood is not None:  # the "not a lesion" gate and the heat map (`python -m dermtrain ood-fit`)
        m["ood"] = ood
    if cam is not None:
        m["cam"] = cam
    check_manifest(m)
    return m


def _f32(x):
    return struct.unpack("f", struct.pack("f", float(x)))[0]


def check_manifest(m):
    """Raise ManifestError naming the field the device would reject."""

    def bad(field, message):
        raise ManifestError(f"{MANIFEST}: field `{field}`: {message}")

    if "ood" in m:
        o = m["ood"]
        if not isinstance(o.get("output"), str) or o["output"] in ("", "logits"):
            bad("ood", 'needs a graph output name (not "logits")')
        if not isinstance(o.get("threshold"), (int, float)) or not math.isfinite(o["threshold"]):
            bad("ood", "needs a finite threshold")
    if "cam" in m and (set(m["cam"]) != {"output"} or m["cam"]["output"] in ("", "logits")):
        bad("cam.output", "needs a graph output name (and nothing else)")

    if m.get("schema_version") != SCHEMA_VERSION:
        bad("schema_version", f"{m.get('schema_version')!r}, this toolchain writes {SCHEMA_VERSION}")
    for k in ("name", "architecture"):
        if not isinstance(m.get(k), str):
            bad(k, "must be a string")
    if m.get("precision") not in PRECISIONS:
        bad("precision", f"{m.get('precision')!r} not one of {PRECISIONS}")
    classes = m.get("classes") or []
    if len(classes) < 2:
        bad("classes", f"needs at least 2 classes, has {len(classes)}")
    for i, c in enumerate(classes):
        if set(c) != CLASS_KEYS:
            bad("classes", f"class #{i} has keys {sorted(c)}, expected {sorted(CLASS_KEYS)}")
        if c["id"] != i:
            bad("classes", f"class #{i} ({c['folder']}) has id {c['id']}; ids must be 0..n-1 in order")
        if c["risk"] not in RISKS:
            bad("classes", f"class #{i} has risk {c['risk']!r}, not one of {RISKS}")
    i = m.get("input") or {}
    if set(i) - {"colour_constancy"} != INPUT_KEYS:
        bad("input", f"keys {sorted(i)}, expected {sorted(INPUT_KEYS)}")
    if not (16 <= i["width"] <= 4096 and 16 <= i["height"] <= 4096):
        bad("input", f"size {i['width']}x{i['height']} outside 16..4096")
    for k, want in (("channels", "RGB"), ("layout", "NCHW"), ("interpolation", "bilinear")):
        if i[k] != want:
            bad(f"input.{k}", f"{i[k]!r} unsupported (only {want!r})")
    r = i["resize"]
    if r.get("kind") == "squash":
        if set(r) != {"kind"}:
            bad("input.resize", f"unexpected keys {sorted(r)}")
    elif r.get("kind") == "center_crop":
        if set(r) != {"kind", "crop_fraction"} or not 0.0 < r["crop_fraction"] <= 1.0:
            bad("input.resize.crop_fraction", f"{r.get('crop_fraction')} not in (0, 1]")
    else:
        bad("input.resize", f"unknown kind {r.get('kind')!r}")
    if (
        len(i["mean"]) != 3
        or len(i["std"]) != 3
        or not all(math.isfinite(v) for v in i["mean"])
        or not all(math.isfinite(v) and v > 0 for v in i["std"])
    ):
        bad("input.std", "mean must be 3 finite numbers and std 3 positive ones")
    if m.get("output") != {"kind": "logits"}:
        bad("output.kind", f"{m.get('output')!r} unsupported (softmax is applied on the device)")
    t = m.get("temperature")
    if not (isinstance(t, (int, float)) and math.isfinite(t) and t > 0):
        bad("temperature", f"{t} must be positive")
    a = m.get("abstain_threshold")
    if not (isinstance(a, (int, float)) and 0.0 <= _f32(a) <= 1.0):
        bad("abstain_threshold", f"{a} not in [0, 1]")
    if "refer" in m:
        rf = m["refer"]
        if not (isinstance(rf.get("threshold"), (int, float)) and 0.0 <= _f32(rf["threshold"]) <= 1.0):
            bad("refer.threshold", f"{rf.get('threshold')} not in [0, 1]")
        if not rf.get("classes"):
            bad("refer.classes", "must name at least one class")
        folders = {c["folder"] for c in classes}
        for c in rf["classes"]:
            if c not in folders:
                bad("refer.classes", f"{c!r} is not one of the classes")
    s = m.get("sha256")
    if not (isinstance(s, str) and len(s) == 64 and all(ch in "0123456789abcdefABCDEF" for ch in s)):
        bad("sha256", f"{s!r} is not 64 hex digits")
    if not isinstance(m.get("provenance"), dict):
        bad("provenance", "must be an object")
    if not isinstance(m.get("metrics"), dict):
        bad("metrics", "must be an object")


def read_manifest(folder):
    return json.loads((Path(folder) / MANIFEST).read_text())


def _save(folder, manifest):
    (Path(folder) / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")


def update_manifest(folder, **changes):
    """Rewrite a bundle's model.json with some fields replaced (e.g. `metrics`), through
    `build_manifest`. Returns the new manifest."""
    old = read_manifest(folder)
    unknown = set(old) - set(FIELDS)
    if unknown:
        raise ManifestError(f"{Path(folder) / MANIFEST}: unknown fields {sorted(unknown)}")
    manifest = build_manifest(**dict(old, **changes))
    _save(folder, manifest)
    return manifest


def write_bundle(folder, onnx_src, fields, card, cm_png):
    """A bundle folder: model.onnx, model.json (from `fields` + the file's sha256), the confusion
    matrix and MODEL_CARD.md (`card(manifest)`). Returns the manifest."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(onnx_src, folder / "model.onnx")
    manifest = build_manifest(**fields, sha256=sha256(folder / "model.onnx"))
    _save(folder, manifest)
    shutil.copyfile(cm_png, folder / "confusion_matrix.png")
    (folder / "MODEL_CARD.md").write_text(card(manifest))
    return manifest
