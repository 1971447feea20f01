"""Archive probe: how well do a network's penultimate features predict which image collection a
photo came from, among melanomas and nevi (the two classes that exist in both collections)?
A grouped (by lesion) 5-fold logistic-regression probe; the same probe for melanoma vs nevus is
the reference. A model that has learned "collection -> class" keeps the archive easy to read."""

import json
import os
from pathlib import Path

import numpy as np
import torch

from . import data, metrics, nets
from . import train as tr


def logreg_cv(feats, y, groups, folds=5, l2=1e-2, seed=0):
    """Out-of-fold probabilities of a ridge-penalised logistic regression (LBFGS)."""
    rng = np.random.default_rng(seed)
    ug = np.array(sorted(set(groups)))
    rng.shuffle(ug)
    fold_of = {g: i % folds for i, g in enumerate(ug)}
    f = np.array([fold_of[g] for g in groups])
    oof = np.zeros(len(y))
    for k in range(folds):
        tr_m, te_m = f != k, f == k
        mu, sd = feats[tr_m].mean(0), feats[tr_m].std(0) + 1e-6
        X = torch.tensor((feats[tr_m] - mu) / sd, dtype=torch.float64)
        Y = torch.tensor(y[tr_m], dtype=torch.float64)
        w = torch.zeros(X.shape[1], dtype=torch.float64, requires_grad=True)
        b = torch.zeros(1, dtype=torch.float64, requires_grad=True)
        opt = torch.optim.LBFGS([w, b], max_iter=200, line_search_fn="strong_wolfe")

        def closure():
            opt.zero_grad()
            loss = torch.nn.functional.binary_cross_entropy_with_logits(X @ w + b, Y) + l2 * (w * w).sum()
            loss.backward()
            return loss

        opt.step(closure)
        Xt = torch.tensor((feats[te_m] - mu) / sd, dtype=torch.float64)
        oof[te_m] = torch.sigmoid(Xt @ w + b).detach().numpy()
    return oof


def probe(args):
    torch.set_num_threads(args.threads or os.cpu_count())
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    classes = data.load_classes()
    names = [c["folder"] for c in classes]
    if args.run:
        ck = torch.load(Path(args.run) / "best.pt", map_location="cpu")
        model, _ = nets.build(ck["arch"], len(classes), pretrained=False, layout=ck.get("layout"))
        model.load_state_dict(ck["model"])
        label, size = f"{ck['arch']} ({args.run})", ck["size"]
    else:
        model, init = nets.build(args.imagenet, len(classes), pretrained=True)
        label, size = f"{args.imagenet} {init}, no fine-tuning", nets.LITE[args.imagenet][0]
    model.eval().to(device)
    mel, nev = names.index("melanoma"), names.index("melanocytic_nevus")
    samples = [s for s in data.read_datasets(args.data, classes) if s.label in (mel, nev)]
    if args.limit:
        rng = np.random.default_rng(0)
        samples = [samples[i] for i in sorted(rng.choice(len(samples), min(args.limit, len(samples)), replace=False))]
    x = tr.eval_tensors(samples, data.input_spec_for(size), args.workers or os.cpu_count())
    feats = []
    with torch.no_grad():
        for i in range(0, len(x), 64):
            feats.append(nets.features(model, x[i : i + 64].to(device)).float().cpu())
    feats = torch.cat(feats).numpy().astype(np.float64)
    groups = [s.lesion_id or str(s.path) for s in samples]
    y_arch = np.array([s.archive == "ham10000" for s in samples], dtype=np.float64)
    y_cls = np.array([s.label == mel for s in samples], dtype=np.float64)
    rep = {
        "model": label,
        "images": len(samples),
        "classes": ["melanoma", "melanocytic_nevus"],
        "archives": {a: int(sum(s.archive == a for s in samples)) for a in sorted({s.archive for s in samples})},
    }
    for what, y in (("archive", y_arch), ("class", y_cls)):
        p = logreg_cv(feats, y, groups)
        pos = y > 0.5
        rep[f"{what}_probe"] = {
            "auc": metrics.auc_binary(p, pos),
            "balanced_accuracy": float(((p > 0.5)[pos].mean() + (p <= 0.5)[~pos].mean()) / 2),
        }
    # Within each class: can the archive still be read off? (1.0 = perfectly, 0.5 = not at all.)
    for c, cname in ((mel, "melanoma"), (nev, "melanocytic_nevus")):
        m = np.array([s.label == c for s in samples])
        if len(set(y_arch[m])) == 2:
            p = logreg_cv(feats[m], y_arch[m], [g for g, k in zip(groups, m) if k])
            rep[f"archive_probe_within_{cname}_auc"] = metrics.auc_binary(p, y_arch[m] > 0.5)
    print(json.dumps(rep), flush=True)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(rep, indent=2) + "\n")
