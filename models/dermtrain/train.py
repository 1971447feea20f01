"""Training loop for the `paper` and `best` recipes (resumable, seeded, CSV + PNG curves)."""
import csv
import json
import math
import os
import random
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import torchvision.transforms.functional as TF
from tqdm import tqdm

from . import data, metrics, nets

RECIPES = {
    # The reference paper: Adam 1e-3, cross-entropy, 224, ImageNet mean/std, flip/rotation/brightness.
    "paper": dict(size=224, epochs=10, batch=32, opt="adam", lr=1e-3, wd=0.0, label_smoothing=0.0,
                  balanced=False, schedule="constant", rrc=False, vflip=False, rotate=20, brightness=0.2,
                  jitter=False, rescue_res=False, freeze=0),
    # Ours: balanced loss, random-resized crop, both flips, colour jitter, cosine schedule,
    # label smoothing, the resolution-cue neutraliser and early stopping on val balanced accuracy.
    "best": dict(size=192, epochs=14, batch=32, opt="adamw", lr=5e-4, wd=1e-4, label_smoothing=0.1,
                 balanced=True, schedule="cosine", rrc=True, vflip=True, rotate=30, brightness=0.2,
                 jitter=True, rescue_res=True, freeze=3),
}


def seed_all(seed):
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def cache_square(samples, side):
    """Decode every image once: centred square crop resized to side x side, uint8 CHW."""
    spec = {"width": side, "height": side, "resize": {"kind": "center_crop", "crop_fraction": 1.0}}
    out = torch.empty((len(samples), 3, side, side), dtype=torch.uint8)
    for i, s in enumerate(tqdm(samples, desc=f"decode {side}px", leave=False)):
        out[i] = torch.from_numpy(np.asarray(data.resize_pil(data.load_rgb(s.path), spec)).copy()).permute(2, 0, 1)
    return out


def eval_tensors(samples, spec):
    return torch.from_numpy(np.stack([data.preprocess_pil(data.load_rgb(s.path), spec) for s in
                                      tqdm(samples, desc="val preprocess", leave=False)]))


def augment(batch_u8, r, size, gen):
    """Per-sample augmentation of a uint8 batch; returns normalised float tensor."""
    out = []
    side = batch_u8.shape[-1]
    for img in batch_u8:
        x = img.float() / 255.0
        if r["rescue_res"] and gen.random() < 0.5:
            # Neutralise the resolution leak: many classes contain 180px upsampled squares.
            s = gen.randint(96, 180)
            x = F.interpolate(x[None], size=(s, s), mode="bilinear", align_corners=False, antialias=True)
            x = F.interpolate(x, size=(side, side), mode="bilinear", align_corners=False)[0]
        if r["rrc"]:
            area = side * side * gen.uniform(0.35, 1.0)
            ratio = math.exp(gen.uniform(math.log(3 / 4), math.log(4 / 3)))
            w = int(round(min(side, math.sqrt(area * ratio))))
            h = int(round(min(side, math.sqrt(area / ratio))))
            top, left = gen.randint(0, side - h), gen.randint(0, side - w)
            x = TF.resized_crop(x, top, left, h, w, [size, size], antialias=True)
        else:
            x = TF.resize(x, [size, size], antialias=True)
        if gen.random() < 0.5:
            x = TF.hflip(x)
        if r["vflip"] and gen.random() < 0.5:
            x = TF.vflip(x)
        if r["rotate"]:
            x = TF.rotate(x, gen.uniform(-r["rotate"], r["rotate"]))
        if r["brightness"]:
            x = TF.adjust_brightness(x, gen.uniform(1 - r["brightness"], 1 + r["brightness"]))
        if r["jitter"]:
            x = TF.adjust_contrast(x, gen.uniform(0.8, 1.2))
            x = TF.adjust_saturation(x, gen.uniform(0.8, 1.2))
            x = TF.adjust_hue(x, gen.uniform(-0.03, 0.03))
        out.append(x.clamp(0, 1))
    x = torch.stack(out)
    mean = torch.tensor(data.IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(data.IMAGENET_STD).view(1, 3, 1, 1)
    return (x - mean) / std


@torch.no_grad()
def predict(model, x, batch=64, tta=False):
    model.eval()
    outs = []
    for i in range(0, len(x), batch):
        b = x[i : i + batch]
        lo = model(b)
        if tta:
            lo = (lo + model(torch.flip(b, dims=[3]))) / 2
        outs.append(lo)
    return torch.cat(outs).numpy()


def plot_curves(rows, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ep = [r["epoch"] for r in rows]
    fig, ax = plt.subplots(1, 2, figsize=(10, 4))
    ax[0].plot(ep, [r["train_loss"] for r in rows], label="train loss")
    ax[0].plot(ep, [r["val_loss"] for r in rows], label="val loss")
    ax[0].set_xlabel("epoch"); ax[0].legend()
    ax[1].plot(ep, [r["train_acc"] for r in rows], label="train acc")
    ax[1].plot(ep, [r["val_acc"] for r in rows], label="val acc")
    ax[1].plot(ep, [r["val_bal_acc"] for r in rows], label="val balanced acc")
    ax[1].set_xlabel("epoch"); ax[1].legend()
    fig.tight_layout(); fig.savefig(path, dpi=90); plt.close(fig)


def train(args):
    torch.set_num_threads(args.threads or os.cpu_count())
    seed_all(args.seed)
    r = dict(RECIPES[args.recipe])
    for k in ("size", "epochs", "batch", "lr"):
        if getattr(args, k) is not None:
            r[k] = getattr(args, k)
    classes = data.load_classes()
    names = [c["folder"] for c in classes]
    samples = data.read_dataset(args.data, classes)
    train_s = [s for s in samples if s.split == "train"]
    val_s = [s for s in samples if s.split == "val"]
    if args.limit_per_class:
        rng = random.Random(args.seed)
        def limit(ss):
            keep = []
            for c in range(len(classes)):
                cs = [s for s in ss if s.label == c]
                rng.shuffle(cs)
                keep += cs[: args.limit_per_class]
            return keep
        train_s, val_s = limit(train_s), limit(val_s)
    if not train_s or not val_s:
        raise data.DatasetError(f"{args.data}: need both train and val samples")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "command.txt").write_text(args.command_line.replace(" --resume", "") + "\n")
    size = r["size"]
    spec = data.input_spec_for(size)
    print(f"recipe {args.recipe}: {json.dumps(r)}; train {len(train_s)} val {len(val_s)}", flush=True)

    cache_side = int(round(size * 1.15))
    xtr = cache_square(train_s, cache_side)
    ytr = torch.tensor([s.label for s in train_s])
    xva = eval_tensors(val_s, spec)
    yva = np.array([s.label for s in val_s])

    model, init = nets.build(args.arch, len(classes), pretrained=True)
    if args.init:
        # Warm start (e.g. distillation on top of a from-scratch run); recorded in provenance.
        ck0 = torch.load(args.init, map_location="cpu")
        if ck0["arch"] != args.arch:
            raise data.DatasetError(f"--init {args.init} is a {ck0['arch']} checkpoint, not {args.arch}")
        model.load_state_dict(ck0["model"])
        init = f"{init}, then {ck0.get('recipe')} recipe for {ck0.get('epoch')} epochs ({args.init})"
    nets.freeze_early(model, args.arch, r["freeze"])
    params = [p for p in model.parameters() if p.requires_grad]
    if r["opt"] == "adam":
        opt = torch.optim.Adam(params, lr=r["lr"], weight_decay=r["wd"])
    else:
        opt = torch.optim.AdamW(params, lr=r["lr"], weight_decay=r["wd"])
    steps_per_epoch = math.ceil(len(train_s) / r["batch"])
    total = steps_per_epoch * r["epochs"]
    warm = steps_per_epoch

    def lr_at(step):
        if r["schedule"] == "constant":
            return 1.0
        if step < warm:
            return (step + 1) / warm
        return 0.5 * (1 + math.cos(math.pi * (step - warm) / max(1, total - warm)))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_at)
    counts = np.bincount(ytr.numpy(), minlength=len(classes)).astype(np.float64)
    weight = None
    if r["balanced"]:
        # Inverse-sqrt-frequency weights: balances rare classes without over-fitting 44 tinea images.
        w = 1.0 / np.sqrt(np.maximum(counts, 1))
        weight = torch.tensor(w / (w * counts).sum() * counts.sum(), dtype=torch.float32)

    teacher = None
    if args.teacher:
        ck = torch.load(args.teacher, map_location="cpu")
        teacher, _ = nets.build(ck["arch"], len(classes), pretrained=False)
        teacher.load_state_dict(ck["model"])
        teacher.eval()
        print(f"distilling from {args.teacher} ({ck['arch']}, val bal acc {ck.get('val_bal_acc')})", flush=True)

    start_epoch, best, rows = 1, -1.0, []
    ckpt_path = out / "checkpoint.pt"
    if args.resume and ckpt_path.exists():
        ck = torch.load(ckpt_path, map_location="cpu")
        model.load_state_dict(ck["model"]); opt.load_state_dict(ck["opt"]); sched.load_state_dict(ck["sched"])
        start_epoch, best, rows = ck["epoch"] + 1, ck["best"], ck["rows"]
        torch.set_rng_state(ck["torch_rng"])
        print(f"resumed from {ckpt_path} at epoch {start_epoch}", flush=True)

    gen = random.Random(args.seed * 1000 + start_epoch)
    bad_epochs = 0
    for epoch in range(start_epoch, r["epochs"] + 1):
        model.train()
        perm = torch.randperm(len(train_s))
        tl, tc, tn = 0.0, 0, 0
        t0 = time.time()
        bar = tqdm(range(0, len(perm), r["batch"]), desc=f"epoch {epoch}/{r['epochs']}", leave=False)
        for i in bar:
            idx = perm[i : i + r["batch"]]
            if len(idx) < 2:
                continue
            x = augment(xtr[idx], r, size, gen)
            y = ytr[idx]
            logits = model(x)
            loss = F.cross_entropy(logits, y, weight=weight, label_smoothing=r["label_smoothing"])
            if teacher is not None:
                with torch.no_grad():
                    tl_ = teacher(x)
                T = 2.0
                kd = F.kl_div(F.log_softmax(logits / T, 1), F.softmax(tl_ / T, 1), reduction="batchmean") * T * T
                loss = 0.3 * loss + 0.7 * kd
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            tl += loss.item() * len(idx); tc += (logits.argmax(1) == y).sum().item(); tn += len(idx)
            bar.set_postfix(loss=f"{tl / tn:.3f}", acc=f"{tc / tn:.3f}")
        vlog = predict(model, xva)
        vloss = float(F.cross_entropy(torch.from_numpy(vlog), torch.from_numpy(yva)).item())
        m = metrics.summary(metrics.softmax(vlog), yva, names)
        row = {"epoch": epoch, "train_loss": tl / tn, "train_acc": tc / tn, "val_loss": vloss,
               "val_acc": m["accuracy"], "val_bal_acc": m["balanced_accuracy"], "lr": opt.param_groups[0]["lr"],
               "seconds": time.time() - t0}
        rows.append(row)
        print(json.dumps(row), flush=True)
        improved = m["balanced_accuracy"] > best
        if improved:
            best, bad_epochs = m["balanced_accuracy"], 0
            torch.save({"arch": args.arch, "recipe": args.recipe, "recipe_params": r, "model": model.state_dict(),
                        "epoch": epoch, "val_bal_acc": best, "init": init, "size": size,
                        "teacher": args.teacher, "seed": args.seed, "data": str(args.data),
                        "limit_per_class": args.limit_per_class}, out / "best.pt")
        else:
            bad_epochs += 1
        torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "sched": sched.state_dict(), "epoch": epoch,
                    "best": best, "rows": rows, "torch_rng": torch.get_rng_state()}, ckpt_path)
        with open(out / "history.csv", "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(rows[0].keys()))
            w.writeheader(); w.writerows(rows)
        plot_curves(rows, out / "curves.png")
        if args.patience and bad_epochs >= args.patience:
            print(f"early stop: no val balanced-accuracy gain for {bad_epochs} epochs", flush=True)
            break
    print(f"best val balanced accuracy {best:.4f} -> {out / 'best.pt'}", flush=True)
