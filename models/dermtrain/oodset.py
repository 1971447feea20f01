"""`ood-set`: assemble a non-lesion image set from folders of photos and textures (e.g. Debian
packages extracted with `dpkg-deb -x`) plus synthetic images, split by file hash into `dev`
(choosing the score and its settings) and `test` (reported). A folder given as `CATEGORY=PATH`
names its images `CATEGORY__...`, so the fit reports what it catches per category (animals,
people, rooms, documents, textures, ...). Images inside Qt resource bundles (`.rcc`, e.g.
GCompris' photos) are carved out. Scikit-image, matplotlib and scikit-learn sample images,
Debian's desktop-base wallpapers, GIMP's patterns and anything under a cargo registry are
refused: they are kept for independent checks."""

import hashlib
import io
import re
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from . import data

RESERVED = (
    "skimage",
    "scikit-image",
    "matplotlib",
    "sklearn",
    "scikit-learn",
    "desktop-base",
    "gimp",
    ".cargo/registry",
)
MAGIC = re.compile(rb"\x89PNG\r\n\x1a\n|RIFF....WEBP|\xff\xd8\xff[\xe0-\xef]", re.S)


def carve(path, min_side):
    """(name, image) for each PNG / WebP / JPEG stored whole inside a binary bundle."""
    from PIL import Image

    b = path.read_bytes()
    for m in MAGIC.finditer(b):
        try:
            with Image.open(io.BytesIO(b[m.start() : m.start() + 32_000_000])) as im:
                im.load()
                if min(im.size) >= min_side:
                    yield f"{path.stem}-{m.start()}", data.to_rgb(im)
        except Exception:  # a false match or a truncated entry
            continue


EXTS = data.IMAGE_EXTS | {".webp"}


def synthetic(n, seed=7):
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        kind = i % 6
        w, h = 640, 480
        if kind == 0:  # flat colour with sensor noise (a wall, a sheet of paper)
            c = rng.integers(30, 230, 3)
            a = np.clip(c + rng.normal(0, 6, (h, w, 3)), 0, 255)
        elif kind == 1:  # smooth gradient
            t = np.linspace(0, 1, w)[None, :, None]
            c0, c1 = rng.integers(0, 255, 3), rng.integers(0, 255, 3)
            a = np.repeat(c0 + (c1 - c0) * t, h, 0)
        elif kind == 2:  # coloured noise
            a = rng.integers(0, 255, (h, w, 3))
        elif kind == 3:  # stripes / a fabric
            p = rng.integers(6, 40)
            x = (np.arange(w)[None, :] // p + np.arange(h)[:, None] // (p * rng.integers(1, 4))) % 2
            c0, c1 = rng.integers(0, 255, 3), rng.integers(0, 255, 3)
            a = np.where(x[..., None] == 1, c0, c1)
        elif kind == 4:  # printed text on paper
            img = Image.new("RGB", (w, h), tuple(int(v) for v in rng.integers(200, 256, 3)))
            d = ImageDraw.Draw(img)
            for row in range(12, h, 22):
                d.text((10, row), "".join(chr(rng.integers(65, 91)) for _ in range(60)), fill=(20, 20, 20))
            out.append((f"synthetic-{i:03d}-text", img))
            continue
        else:  # a screen: coloured blocks
            a = np.zeros((h, w, 3))
            for _ in range(12):
                x0, y0 = rng.integers(0, w - 40), rng.integers(0, h - 40)
                a[y0 : y0 + rng.integers(20, 200), x0 : x0 + rng.integers(20, 300)] = rng.integers(0, 255, 3)
        out.append((f"synthetic-{i:03d}", Image.fromarray(np.asarray(a, np.uint8))))
    return out


def build(folders, out, n_synthetic=60, min_side=96, max_per_folder=0):
    out = Path(out)
    for split in ("dev", "test"):
        (out / split).mkdir(parents=True, exist_ok=True)
    seen, counts = set(), {"dev": 0, "test": 0}

    def put(name, img):
        digest = hashlib.sha256(img.tobytes()).hexdigest()
        if digest in seen or min(img.size) < min_side:
            return
        seen.add(digest)
        split = "dev" if int(digest[:8], 16) % 2 == 0 else "test"
        img.thumbnail((1024, 1024))
        img.save(out / split / f"{name}.jpg", quality=92)
        counts[split] += 1

    for spec in folders:
        category, _, folder = spec.rpartition("=")
        prefix = f"{category}__" if category else ""
        if any(r in str(Path(folder).resolve()).lower() for r in RESERVED):
            raise data.DatasetError(f"{folder}: a reserved image set (kept for independent checks)")
        files = [
            p
            for p in (sorted(Path(folder).rglob("*")) if Path(folder).is_dir() else [Path(folder)])
            if (p.suffix.lower() in EXTS or p.suffix == ".rcc") and not any(r in str(p).lower() for r in RESERVED)
        ]
        if max_per_folder and len(files) > max_per_folder:
            # A fixed choice (by path hash), so the set is the same on every machine.
            files = sorted(files, key=lambda p: hashlib.sha256(p.name.encode()).hexdigest())
            files = sorted(files[:max_per_folder])
        for p in files:
            if p.suffix == ".rcc":
                for name, img in carve(p, min_side):
                    put(prefix + name, img)
                continue
            try:
                img = data.load_rgb(p)
            except Exception:  # not every file in a package is a readable image
                continue
            put(prefix + p.parent.name + "-" + p.stem, img)
    for name, img in synthetic(n_synthetic):
        put("synthetic__" + name, img)
    print(f"wrote {out}: {counts}")


def degraded(roots, out, n=60, seed=5):
    """Degraded captures of `n` lesion-clean val lesions (the same lesions for each kind), as
    class folders for `dermcam eval`: Gaussian blur 1.5-3 % of the size, a motion blur 5-10 % in
    a random direction, brightness x0.05-0.2, x2.5-4 + 60 (blown out)."""
    from PIL import ImageEnhance, ImageFilter

    from .ood import lesion_splits

    classes, _, val = lesion_splits(roots)
    rng = np.random.default_rng(seed)
    pick = [val[i] for i in rng.choice(len(val), n, replace=False)]

    def motion(im, length, ang):
        a = np.asarray(im, np.float32)
        acc = np.zeros_like(a)
        for t in np.linspace(-length / 2, length / 2, int(length)):
            acc += np.roll(np.roll(a, int(round(t * np.sin(ang))), 0), int(round(t * np.cos(ang))), 1)
        return Image.fromarray((acc / int(length)).astype(np.uint8))

    ops = {
        "blurred": lambda im: im.filter(ImageFilter.GaussianBlur(rng.uniform(0.015, 0.03) * max(im.size))),
        "motion": lambda im: motion(im, rng.uniform(0.05, 0.1) * max(im.size), rng.uniform(0, np.pi)),
        "dark": lambda im: ImageEnhance.Brightness(im).enhance(rng.uniform(0.05, 0.2)),
        "bright": lambda im: Image.fromarray(
            np.clip(np.asarray(im, np.float32) * rng.uniform(2.5, 4) + 60, 0, 255).astype(np.uint8)
        ),
    }
    for kind, f in ops.items():
        for s in pick:
            d = Path(out) / kind / classes[s.label]["folder"]
            d.mkdir(parents=True, exist_ok=True)
            f(data.load_rgb(s.path)).save(d / (s.path.stem + ".jpg"), quality=92)
    print(f"wrote {out}: {', '.join(ops)} x {n} lesions")
