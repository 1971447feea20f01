"""Training loop (resumable, seeded, CSV + PNG curves) for the `paper`, `best`, `v2` and `v3` recipes.

Runs on CPU or CUDA: images are decoded once into a uint8 cache and augmented batch-wise on the
training device (one affine warp + colour ops per batch), so a GPU is not starved by Python.
"""

import copy
import csv
import hashlib
import io
import json
import math
import os
import random
import time
from multiprocessing import Pool
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from . import data, metrics, nets
from .augment import augment

RECIPES = {
    # The reference paper: Adam 1e-3, cross-entropy, 224, ImageNet mean/std, flip/rotation/brightness.
    "paper": dict(
        size=224,
        epochs=10,
        batch=32,
        opt="adam",
        lr=1e-3,
        wd=0.0,
        label_smoothing=0.0,
        balanced=False,
        schedule="constant",
        rrc=False,
        vflip=False,
        rotate=20,
        brightness=0.2,
        jitter=False,
        rescue_res=False,
        freeze=0,
        look=False,
        ema=0.0,
    ),
    # v1 (the first shipped bundles): balanced loss, random-resized crop, flips, mild colour jitter,
    # cosine schedule, label smoothing, random downscaling half the time.
    "best": dict(
        size=192,
        epochs=14,
        batch=32,
        opt="adamw",
        lr=5e-4,
        wd=1e-4,
        label_smoothing=0.1,
        balanced=True,
        schedule="cosine",
        rrc=True,
        vflip=True,
        rotate=30,
        brightness=0.2,
        jitter=True,
        rescue_res=True,
        freeze=3,
        look=False,
        ema=0.0,
    ),
    # v2: shortcut-free. Every image gets a comparable look (downscaled below the smallest source
    # resolution most of the time, random JPEG re-encoding, random aspect squash), strong colour
    # and white-balance jitter (camera light, colour-processed photos), any rotation, balanced
    # sampling over class x archive, full fine-tuning with a weight EMA.
    "v2": dict(
        size=224,
        epochs=40,
        batch=64,
        opt="adamw",
        lr=1e-3,
        wd=0.02,
        label_smoothing=0.1,
        balanced=True,
        schedule="cosine",
        rrc=True,
        vflip=True,
        rotate=180,
        brightness=0.3,
        jitter=True,
        rescue_res=True,
        freeze=0,
        look=True,
        ema=0.998,
        crop_min=0.35,
        look_p=0.85,
    ),
}
# v3: v2 plus Shades of Gray colour constancy (p = 6) on every training crop after the colour and
# white-balance jitter, and in the bundle's input spec, so the device applies the same.
RECIPES["v3"] = dict(RECIPES["v2"], colour_constancy=6.0)


def seed_all(seed):
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _decode(job):
    path, side, jpeg_seed = job
    spec = {"width": side, "height": side, "resize": {"kind": "center_crop", "crop_fraction": 1.0}}
    img = data.resize_pil(data.load_rgb(path), spec)
    out = [np.asarray(img).transpose(2, 0, 1).copy()]
    if jpeg_seed is not None:
        # A re-encoded copy at a random quality (and a random lower resolution): the JPEG look of
        # the small web-sourced archives, given to every class.
        rng = random.Random(jpeg_seed)
        s = rng.randint(min(120, side), side)
        buf = io.BytesIO()
        img.resize((s, s), Image.BILINEAR).save(buf, "JPEG", quality=rng.randint(25, 75))
        buf.seek(0)
        out.append(
            np.asarray(Image.open(buf).convert("RGB").resize((side, side), Image.BILINEAR)).transpose(2, 0, 1).copy()
        )
    return out


def _preprocess(job):
    path, spec = job
    return data.preprocess_pil(data.load_rgb(path), spec)


def pool_map(fn, jobs, workers):
    if workers <= 1 or len(jobs) < 64:
        return [fn(j) for j in jobs]
    with Pool(workers) as p:
        return p.map(fn, jobs, chunksize=16)


def cache_square(samples, side, jpeg, workers, seed=0):
    """Decode every image once: centred square crop resized to side x side, uint8 CHW (+ a JPEG copy)."""
    res = pool_map(
        _decode, [(s.path, side, (seed * 100003 + i) if jpeg else None) for i, s in enumerate(samples)], workers
    )
    x = torch.from_numpy(np.stack([r[0] for r in res]))
    xj = torch.from_numpy(np.stack([r[1] for r in res])) if jpeg else None
    return x, xj


def eval_tensors(samples, spec, workers):
    return torch.from_numpy(np.stack(pool_map(_preprocess, [(s.path, spec) for s in samples], workers)))


@torch.no_grad()
def predict(model, x, device, batch=128, tta=False):
    model.eval()
    outs = []
    for i in range(0, len(x), batch):
        b = x[i : i + batch].to(device).contiguous(memory_format=torch.channels_last)
        with autocast(device):
            lo = model(b).float()
            if tta:
                lo = (lo + model(torch.flip(b, dims=[3])).float()) / 2
        outs.append(lo.cpu())
    return torch.cat(outs).numpy()


def autocast(device):
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    import contextlib

    return contextlib.nullcontext()


def plot_curves(rows, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ep = [r["epoch"] for r in rows]
    fig, ax = plt.subplots(1, 2, figsize=(10, 4))
    ax[0].plot(ep, [r["train_loss"] for r in rows], label="train loss")
    ax[0].plot(ep, [r["val_loss"] for r in rows], label="val loss")
    ax[0].set_xlabel("epoch")
    ax[0].legend()
    ax[1].plot(ep, [r["train_acc"] for r in rows], label="train acc")
    ax[1].plot(ep, [r["val_acc"] for r in rows], label="val acc")
    ax[1].plot(ep, [r["val_bal_acc"] for r in rows], label="val balanced acc (selection)")
    ax[1].set_xlabel("epoch")
    ax[1].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def limit_per_class(ss, n, n_classes, seed):
    rng = random.Random(seed)
    keep = []
    for c in range(n_classes):
        for src in sorted({s.source for s in ss}):
            cs = [s for s in ss if s.label == c and s.source == src]
            rng.shuffle(cs)
            keep += cs[:n]
    return keep


def split_samples(args, classes):
    """Train / val / selection subsets. Selection = val minus images whose lesion is also in train."""
    samples = data.read_datasets(args.data, classes)
    by_folder = {c["folder"]: c["id"] for c in classes}
    holdout = set()
    for h in args.holdout or []:
        cls, _, archive = h.partition(":")
        if cls not in by_folder or not archive:
            raise data.DatasetError(f"--holdout {h!r}: expected CLASS:ARCHIVE with a known class folder")
        holdout.add((by_folder[cls], archive))
    leaky = data.leaky_val(samples)
    train_s = [s for s in samples if s.split == "train" and (s.label, s.archive) not in holdout]
    held_s = [s for s in samples if (s.label, s.archive) in holdout]
    val_s = [s for s in samples if s.split == "val"]
    if args.limit_per_class:
        train_s = limit_per_class(train_s, args.limit_per_class, len(classes), args.seed)
        val_s = limit_per_class(val_s, args.limit_per_class, len(classes), args.seed)
        held_s = held_s[: args.limit_per_class * 2]
    sel = np.array([s.path not in leaky for s in val_s])
    return train_s, val_s, sel, held_s


def sample_weights(train_s, n_classes):
    """Class share ~ sqrt(n_class), archives equal within a class; the loss weights the rest
    (1/sqrt(n_class)), so classes count equally in expectation without repeating 44 tinea images
    20x per epoch. Equal archives per class stop "which collection" from predicting the class."""
    counts = {}
    for s in train_s:
        counts[(s.label, s.archive)] = counts.get((s.label, s.archive), 0) + 1
    n_c = np.bincount([s.label for s in train_s], minlength=n_classes).astype(np.float64)
    arch_per_class = {c: len({a for (cc, a) in counts if cc == c}) for c in range(n_classes)}
    w = np.array([np.sqrt(n_c[s.label]) / arch_per_class[s.label] / counts[(s.label, s.archive)] for s in train_s])
    return torch.tensor(w / w.sum(), dtype=torch.double), n_c


def decoded(out, train_s, val_s, side, jpeg, spec, workers, seed):
    """The decoded training squares (+ JPEG copies) and val tensors, cached in the run folder:
    a resumed run skips the ~5 minutes of decoding on a 2-core box."""
    key = hashlib.sha256(
        json.dumps([[str(s.path) for s in train_s + val_s], side, jpeg, spec, seed]).encode()
    ).hexdigest()[:16]
    path = out / f"decoded-{key}.pt"
    if path.exists():
        try:
            c = torch.load(path, map_location="cpu")
            print(f"decoded images from {path}", flush=True)
            return c["xtr"], c["xtr_j"], c["xva"]
        except Exception as e:  # a cache cut short by a killed session: decode again
            print(f"ignoring {path}: {e}", flush=True)
    xtr, xtr_j = cache_square(train_s, side, jpeg, workers, seed)
    xva = eval_tensors(val_s, spec, workers)
    for old in out.glob("decoded-*.pt"):
        old.unlink()
    save_atomic({"xtr": xtr, "xtr_j": xtr_j, "xva": xva}, path)
    return xtr, xtr_j, xva


def distilled(ce, logits, teacher_logits, T=2.0):
    """Knowledge distillation (T = 2, 0.7 KD + 0.3 CE), the same for fresh and cached views."""
    kd = F.kl_div(F.log_softmax(logits / T, 1), F.softmax(teacher_logits / T, 1), reduction="batchmean") * T * T
    return 0.3 * ce + 0.7 * kd


def normalise_u8(xb):
    """uint8 [B,3,H,W] in 0..255 -> the ImageNet-normalised float batch the networks take."""
    mean = torch.tensor(data.IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(data.IMAGENET_STD).view(1, 3, 1, 1)
    return (xb.float() / 255.0 - mean) / std


@torch.no_grad()
def teacher_views(out, teacher, t_size, xtr, xtr_j, r, size, n_views, seed, device, teacher_path):
    """`n_views` augmented views of every training image (uint8, at the student's size) and the
    teacher's logits on each, made once and cached in the run folder: distilling then costs no
    teacher pass per step (on a 2-core CPU the Lite2 teacher's forward pass is about a third of
    a distillation step)."""
    key = hashlib.sha256(
        json.dumps([len(xtr), size, n_views, seed, str(teacher_path), os.path.getmtime(teacher_path)]).encode()
    ).hexdigest()[:16]
    path = out / f"kd-views-{key}.pt"
    if path.exists():
        try:
            c = torch.load(path, map_location="cpu")
            print(f"teacher views from {path}", flush=True)
            return c["views"], c["logits"]
        except Exception as e:
            print(f"ignoring {path}: {e}", flush=True)
    t0 = time.time()
    n = len(xtr)
    views = torch.empty((n_views, n, 3, size, size), dtype=torch.uint8)
    logits = None
    mean = torch.tensor(data.IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(data.IMAGENET_STD).view(1, 3, 1, 1)
    for v in range(n_views):
        gv = torch.Generator().manual_seed(seed * 1000 + v)
        for i in range(0, n, 64):
            idx = torch.arange(i, min(n, i + 64))
            src = xtr[idx]
            if xtr_j is not None:
                src = torch.where((torch.rand(len(idx), generator=gv) < 0.35).view(-1, 1, 1, 1), xtr_j[idx], src)
            x = augment(src, r, size, gv).cpu()
            u8 = ((x * std + mean).clamp(0, 1) * 255).round().to(torch.uint8)
            views[v, idx] = u8
            xn = normalise_u8(u8).to(device).contiguous(memory_format=torch.channels_last)
            xt = (
                xn if t_size == size else F.interpolate(xn, size=(t_size, t_size), mode="bilinear", align_corners=False)
            )
            lo = teacher(xt).float().cpu()
            if logits is None:
                logits = torch.empty((n, n_views, lo.shape[1]))
            logits[idx, v] = lo
        print(f"teacher views: {v + 1}/{n_views} ({time.time() - t0:.0f} s)", flush=True)
    for old in out.glob("kd-views-*.pt"):
        old.unlink()
    save_atomic({"views": views, "logits": logits}, path)
    return views, logits


def save_atomic(obj, path):
    """A checkpoint written whole or not at all: a run killed mid-save (a session ending) resumes
    from the previous epoch instead of failing on a truncated file."""
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def rng_state():
    return {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}


def restore_rng(st):
    torch.set_rng_state(st["torch"])
    np.random.set_state(st["numpy"])
    random.setstate(st["python"])


class Ema:
    def __init__(self, model, decay):
        self.model = copy.deepcopy(model).eval()
        self.decay, self.steps = decay, 0
        for p in self.model.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def update(self, model):
        self.steps += 1
        d = min(self.decay, (1 + self.steps) / (10 + self.steps))
        for e, p in zip(self.model.state_dict().values(), model.state_dict().values()):
            if e.dtype.is_floating_point:
                e.mul_(d).add_(p.detach(), alpha=1 - d)
            else:
                e.copy_(p)


def init_from_bundle(bundle, arch, n_classes, train_s, workers, seed):
    """Warm start from an exported bundle (model.onnx + model.json) when its checkpoint is gone:
    its weights, with batch-norm statistics re-measured on 256 training images preprocessed by
    that bundle's own input spec (e.g. without colour constancy)."""
    from .bundle import read_manifest

    man = read_manifest(bundle)
    if man["architecture"] != arch:
        raise data.DatasetError(f"--init {bundle} is a {man['architecture']} bundle, not {arch}")
    model = nets.from_onnx(bundle / "model.onnx", arch, n_classes)
    pick = torch.randperm(len(train_s), generator=torch.Generator().manual_seed(seed))[:256]
    x = eval_tensors([train_s[i] for i in pick], man["input"], workers)
    nets.recalibrate_bn(model, x.split(32))
    prov = man["provenance"]
    return model, f"{bundle.name} bundle {man['sha256'][:12]} ({prov.get('init', '?')}, then {prov.get('recipe')})"


def train(args):
    torch.set_num_threads(args.threads or os.cpu_count())
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    seed_all(args.seed)
    r = dict(RECIPES[args.recipe])
    for k in ("size", "epochs", "batch", "lr", "crop_min", "look_p"):
        if getattr(args, k) is not None:
            r[k] = getattr(args, k)
    classes = data.load_classes()
    names = [c["folder"] for c in classes]
    train_s, val_s, sel, held_s = split_samples(args, classes)
    if not train_s or not val_s:
        raise data.DatasetError(f"{args.data}: need both train and val samples")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "command.txt").write_text(args.command_line.replace(" --resume", "") + "\n")
    size = r["size"]
    spec = data.input_spec_for(size, r.get("colour_constancy"))
    workers = args.workers or os.cpu_count()
    print(
        f"recipe {args.recipe}: {json.dumps(r)}; train {len(train_s)} val {len(val_s)} "
        f"(selection on {int(sel.sum())} lesion-clean) held-out {len(held_s)}; device {device}",
        flush=True,
    )

    t0 = time.time()
    cache_side = int(round(size * 1.15))
    xtr, xtr_j, xva = decoded(out, train_s, val_s, cache_side, r["look"], spec, workers, args.seed)
    ytr = torch.tensor([s.label for s in train_s])
    yva = np.array([s.label for s in val_s])
    if device.type == "cuda":
        xtr = xtr.to(device)
        xtr_j = xtr_j.to(device) if xtr_j is not None else None
    print(f"decoded {len(train_s) + len(val_s)} images in {time.time() - t0:.1f} s", flush=True)

    model, init = nets.build(args.arch, len(classes), pretrained=True)
    layout = nets.lite_layout(model.state_dict()) if args.arch in nets.LITE else None
    if args.init and Path(args.init).is_dir():
        model, init = init_from_bundle(Path(args.init), args.arch, len(classes), train_s, workers, args.seed)
    elif args.init:
        ck0 = torch.load(args.init, map_location="cpu")
        if ck0["arch"] != args.arch:
            raise data.DatasetError(f"--init {args.init} is a {ck0['arch']} checkpoint, not {args.arch}")
        model.load_state_dict(ck0["model"])
        init = f"{init}, then {ck0.get('recipe')} recipe for {ck0.get('epoch')} epochs ({args.init})"
    nets.freeze_early(model, args.arch, r["freeze"])
    # channels_last on CPU too: Debian's torch 1.13 runs these convolutions much faster that way.
    model.to(device).to(memory_format=torch.channels_last)
    params = [p for p in model.parameters() if p.requires_grad]
    opt_cls = torch.optim.Adam if r["opt"] == "adam" else torch.optim.AdamW
    opt = opt_cls(params, lr=r["lr"], weight_decay=r["wd"])

    weights_s, counts = sample_weights(train_s, len(classes))
    weight = None
    if r["balanced"]:
        w = 1.0 / np.sqrt(np.maximum(counts, 1))
        weight = torch.tensor(w / (w * counts).sum() * counts.sum(), dtype=torch.float32, device=device)
    steps_per_epoch = max(1, len(train_s) // r["batch"])

    teacher, t_size = None, None
    if args.teacher:
        ck = torch.load(args.teacher, map_location="cpu")
        teacher, _ = nets.build(ck["arch"], len(classes), pretrained=False, layout=ck.get("layout"))
        teacher.load_state_dict(ck["model"])
        teacher.eval().to(device).to(memory_format=torch.channels_last)
        t_size = ck["size"]
        print(
            f"distilling from {args.teacher} ({ck['arch']} at {t_size}, val bal acc {ck.get('val_bal_acc')})",
            flush=True,
        )

    g = torch.Generator().manual_seed(args.seed)
    kd_views = None
    if teacher is not None and args.kd_views:
        kd_views = teacher_views(
            out, teacher, t_size, xtr, xtr_j, r, size, args.kd_views, args.seed, device, args.teacher
        )

    def step_batch(idx, train_step=True):
        if kd_views is not None:
            return step_cached(idx, train_step)
        x = augment(
            xtr[idx.to(xtr.device)]
            if xtr_j is None
            else torch.where(
                (torch.rand(len(idx), generator=g) < 0.35).to(xtr.device).view(-1, 1, 1, 1),
                xtr_j[idx.to(xtr.device)],
                xtr[idx.to(xtr.device)],
            ),
            r,
            size,
            g,
        )
        y = ytr[idx].to(device)
        x = x.contiguous(memory_format=torch.channels_last)
        with autocast(device):
            logits = model(x).float()
            loss = F.cross_entropy(logits, y, weight=weight, label_smoothing=r["label_smoothing"])
            if teacher is not None:
                with torch.no_grad():
                    xt = (
                        x
                        if t_size == size
                        else F.interpolate(x, size=(t_size, t_size), mode="bilinear", align_corners=False)
                    )
                    tl_ = teacher(xt).float()
                loss = distilled(loss, logits, tl_)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if not train_step:
            opt.zero_grad(set_to_none=True)
            return None
        return loss, logits, y

    ckpt_path = out / "checkpoint.pt"
    ck = torch.load(ckpt_path, map_location="cpu") if args.resume and ckpt_path.exists() else None

    def step_cached(idx, train_step):
        """Distillation from cached views: a random one of each image's augmented views and
        the teacher's logits on it (no augmentation, no teacher pass per step)."""
        views, tlog = kd_views
        v = torch.randint(0, views.shape[0], (len(idx),), generator=g)
        x = normalise_u8(views[v, idx]).to(device).contiguous(memory_format=torch.channels_last)
        y = ytr[idx].to(device)
        with autocast(device):
            logits = model(x).float()
            loss = F.cross_entropy(logits, y, weight=weight, label_smoothing=r["label_smoothing"])
            loss = distilled(loss, logits, tlog[idx, v].to(device))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if not train_step:
            opt.zero_grad(set_to_none=True)
            return None
        return loss, logits, y

    # Fit the schedule to a time budget (GPU box leases are short): time a few steps first. A
    # resumed run keeps the epoch count it fitted at its start, so its schedule does not change.
    if ck is not None and "epochs" in ck:
        r["epochs"] = ck["epochs"]
    elif args.time_budget:
        model.train()
        # Four untimed steps: the first CPU steps (allocator, channels_last reorders) run 2-3x slow.
        for _ in range(4):
            step_batch(torch.multinomial(weights_s, r["batch"], replacement=True, generator=g), train_step=False)
        if device.type == "cuda":
            torch.cuda.synchronize()
        t1 = time.time()
        for _ in range(3):
            step_batch(torch.multinomial(weights_s, r["batch"], replacement=True, generator=g), train_step=False)
        if device.type == "cuda":
            torch.cuda.synchronize()
        per_epoch = (time.time() - t1) / 3 * steps_per_epoch * 1.15 + 0.5
        fit = max(3, int(args.time_budget / per_epoch))
        if fit < r["epochs"]:
            print(
                f"time budget {args.time_budget:.0f} s at ~{per_epoch:.1f} s/epoch: {r['epochs']} -> {fit} epochs",
                flush=True,
            )
            r["epochs"] = fit
    total = steps_per_epoch * r["epochs"]
    warm = min(steps_per_epoch * 2, total // 4)

    def lr_at(step):
        if r["schedule"] == "constant":
            return 1.0
        if step < warm:
            return (step + 1) / warm
        return 0.5 * (1 + math.cos(math.pi * (step - warm) / max(1, total - warm)))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_at)
    ema = Ema(model, r["ema"]) if r["ema"] else None

    start_epoch, best, rows = 1, -1.0, []
    if ck is not None:
        model.load_state_dict(ck["model"])
        opt.load_state_dict(ck["opt"])
        sched.load_state_dict(ck["sched"])
        if ema is not None and ck.get("ema") is not None:
            ema.model.load_state_dict(ck["ema"])
            ema.steps = ck.get("ema_steps", 0)
        start_epoch, best, rows = ck["epoch"] + 1, ck["best"], ck["rows"]
        g.set_state(ck["gen"])
        if "rng" in ck:
            restore_rng(ck["rng"])
        print(f"resumed from {ckpt_path} at epoch {start_epoch} of {r['epochs']}", flush=True)

    bad_epochs = 0
    for epoch in range(start_epoch, r["epochs"] + 1):
        model.train()
        order = torch.multinomial(weights_s, steps_per_epoch * r["batch"], replacement=True, generator=g)
        tl, tc, tn = 0.0, 0, 0
        t0 = time.time()
        for i in range(steps_per_epoch):
            loss, logits, y = step_batch(order[i * r["batch"] : (i + 1) * r["batch"]])
            opt.step()
            sched.step()
            if ema is not None:
                ema.update(model)
            tl += loss.item() * len(y)
            tc += (logits.argmax(1) == y).sum().item()
            tn += len(y)
        evaluated = ema.model if ema is not None else model
        vlog = predict(evaluated, xva, device)
        vloss = float(F.cross_entropy(torch.from_numpy(vlog), torch.from_numpy(yva)).item())
        m_all = metrics.summary(metrics.softmax(vlog), yva, names)
        m = metrics.summary(metrics.softmax(vlog[sel]), yva[sel], names)
        row = {
            "epoch": epoch,
            "train_loss": tl / tn,
            "train_acc": tc / tn,
            "val_loss": vloss,
            "val_acc": m["accuracy"],
            "val_bal_acc": m["balanced_accuracy"],
            "val_all_bal_acc": m_all["balanced_accuracy"],
            "lr": opt.param_groups[0]["lr"],
            "seconds": time.time() - t0,
        }
        rows.append(row)
        print(json.dumps(row), flush=True)
        if m["balanced_accuracy"] > best:
            best, bad_epochs = m["balanced_accuracy"], 0
            save_atomic(
                {
                    "arch": args.arch,
                    "recipe": args.recipe,
                    "recipe_params": r,
                    "model": {k: v.detach().cpu() for k, v in evaluated.state_dict().items()},
                    "layout": layout,
                    "epoch": epoch,
                    "val_bal_acc": best,
                    "init": init,
                    "size": size,
                    "teacher": args.teacher,
                    "seed": args.seed,
                    "data": [str(d) for d in args.data],
                    "holdout": args.holdout,
                    "selection": "val minus images whose lesion is in train",
                    "limit_per_class": args.limit_per_class,
                },
                out / "best.pt",
            )
        else:
            bad_epochs += 1
        if not args.no_checkpoint:
            save_atomic(
                {
                    "model": model.state_dict(),
                    "opt": opt.state_dict(),
                    "sched": sched.state_dict(),
                    "ema": ema.model.state_dict() if ema is not None else None,
                    "ema_steps": ema.steps if ema is not None else 0,
                    "epoch": epoch,
                    "best": best,
                    "rows": rows,
                    "gen": g.get_state(),
                    "rng": rng_state(),
                    "epochs": r["epochs"],
                },
                ckpt_path,
            )
        with open(out / "history.csv", "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(rows[0].keys()))
            w.writeheader()
            w.writerows(rows)
        if args.patience and bad_epochs >= args.patience:
            print(f"early stop: no val balanced-accuracy gain for {bad_epochs} epochs", flush=True)
            break
    plot_curves(rows, out / "curves.png")
    if held_s:
        held_report(out, held_s, spec, device, names, workers)
    (out / "done.json").write_text(json.dumps({"epochs": len(rows), "best_val_bal_acc": best}) + "\n")
    print(f"best val (lesion-clean) balanced accuracy {best:.4f} -> {out / 'best.pt'}", flush=True)


def held_report(out, held_s, spec, device, names, workers):
    """Leave-one-archive-out: recall of the best model on the class/archive images it never saw."""
    ck = torch.load(out / "best.pt", map_location="cpu")
    model, _ = nets.build(ck["arch"], len(names), pretrained=False, layout=ck.get("layout"))
    model.load_state_dict(ck["model"])
    model.to(device)
    x = eval_tensors(held_s, spec, workers)
    pred = predict(model, x, device).argmax(1)
    y = np.array([s.label for s in held_s])
    rep = {
        "holdout": ck["holdout"],
        "n": int(len(y)),
        "recall": float((pred == y).mean()),
        "predicted_as": {names[c]: int((pred == c).sum()) for c in range(len(names)) if (pred == c).any()},
    }
    (out / "holdout.json").write_text(json.dumps(rep, indent=2) + "\n")
    print("held-out " + json.dumps(rep), flush=True)
