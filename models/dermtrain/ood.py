"""`ood`: a "not a lesion" score and class-activation maps, baked into a bundle's ONNX graph.

No retraining: at three stages of the network, the Mahalanobis distance of the globally pooled
features to the nearest training-class mean under one shared, shrunk covariance (Lee et al.
2018), standardised and summed by a few extra nodes, so tract and ONNX Runtime both produce it
and the bundle's sha256 covers it. The threshold comes from
lesion-clean val lesions only (a quantile: the share of real lesions turned away); the
non-lesion images measure the result, they do not set it.

The class-activation map (CAM, Zhou et al. 2016) is the classifier's weights applied to the last
feature map before pooling: one h x w map per class; Rust picks the shown class and draws it.
"""

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from . import data, metrics
from .onnx_export import ort_session

OOD_OUTPUT = "ood"
CAM_OUTPUT = "cam"


def graph_tail(model):
    """(pool input = last feature map, pooled features fed to the classifier, fc weight name, fc
    bias name): found by following the final Gemm back through Flatten / Q-DQ pairs."""
    g = model.graph
    by_out = {o: n for n in g.node for o in n.output}
    gemm = [n for n in g.node if n.op_type == "Gemm"]
    if not gemm:
        raise ValueError("no Gemm classifier in the graph")
    fc = gemm[-1]
    feat = fc.input[0]
    n = by_out.get(feat)
    while n is not None and n.op_type != "GlobalAveragePool":
        n = by_out.get(n.input[0])
    if n is None:
        raise ValueError("no GlobalAveragePool before the classifier")
    return n.input[0], feat, fc


def initializer(model, name):
    """An initializer by name, following a DequantizeLinear of an int8 weight."""
    inits = {i.name: i for i in model.graph.initializer}
    if name in inits:
        return numpy_helper.to_array(inits[name]).astype(np.float32)
    for n in model.graph.node:
        if n.op_type == "DequantizeLinear" and n.output[0] == name:
            q = numpy_helper.to_array(inits[n.input[0]]).astype(np.float32)
            s = numpy_helper.to_array(inits[n.input[1]]).astype(np.float32)
            z = numpy_helper.to_array(inits[n.input[2]]).astype(np.float32) if len(n.input) > 2 else 0.0
            axis = next((a.i for a in n.attribute if a.name == "axis"), 1)
            if np.ndim(s) == 1 and s.size > 1:
                shape = [1] * q.ndim
                shape[axis] = -1
                s = s.reshape(shape)
                z = np.reshape(z, shape) if np.ndim(z) else z
            return (q - z) * s
    raise KeyError(name)


class Mahalanobis:
    """Class means + one shared covariance shrunk towards its mean variance."""

    def __init__(self, feats, labels, n_classes, shrink=0.1):
        self.means = np.stack([feats[labels == k].mean(0) for k in range(n_classes)])
        centred = feats - self.means[labels]
        cov = centred.T @ centred / len(feats)
        d = cov.shape[0]
        cov = (1 - shrink) * cov + shrink * np.trace(cov) / d * np.eye(d)
        lam, vec = np.linalg.eigh(cov)
        # x -> x @ W whitens: |(x - mu) @ W|^2 is the Mahalanobis distance.
        self.w = (vec / np.sqrt(lam)).astype(np.float32)
        self.centres = (self.means @ self.w).astype(np.float32)

    def score(self, feats):
        z = feats @ self.w
        d = ((z[:, None, :] - self.centres[None]) ** 2).sum(-1)
        return d.min(1)


def quantile_threshold(scores, turn_away):
    """The score above which `turn_away` of the given (in-distribution) scores lie."""
    return float(np.quantile(scores, 1.0 - turn_away))


def lesion_splits(roots):
    """(classes, train, lesion-clean val): val without the images whose lesion is in train."""
    classes = data.load_classes()
    samples = data.read_datasets(roots, classes)
    leaky = data.leaky_val(samples)
    train = [s for s in samples if s.split == "train"]
    val = [s for s in samples if s.split == "val" and s.path not in leaky]
    return classes, train, val


def image_list(folder):
    return sorted(p for p in Path(folder).rglob("*") if p.suffix.lower() in data.IMAGE_EXTS | {".webp"})


def colour_shift(seed):
    """A camera's white balance and exposure gone wrong: per-channel gains, a gamma, a JPEG."""
    import io

    from PIL import Image

    rng = np.random.default_rng(seed)

    def f(img):
        a = np.asarray(img, np.float32) / 255.0
        gains = np.exp(rng.uniform(-0.35, 0.35, 3))
        a = np.clip(a * gains, 0, 1) ** np.exp(rng.uniform(-0.3, 0.3))
        out = Image.fromarray((a * 255 + 0.5).astype(np.uint8))
        buf = io.BytesIO()
        out.save(buf, "JPEG", quality=int(rng.integers(60, 95)))
        buf.seek(0)
        return Image.open(buf).convert("RGB")

    return f


# Mid-level stage outputs separate non-lesion images far better than the penultimate features
# (they keep texture and colour statistics the classifier has learned to ignore); measured on
# the dev half of the non-lesion set, see the model card. One per stage, deepest last.
DEFAULT_LAYERS = {
    "efficientnet_lite2": ["/_blocks.10/Add_output_0", "/_blocks.14/Add_output_0", "/_blocks.19/Add_output_0"],
    "efficientnet_lite0": ["/_blocks.7/Add_output_0", "/_blocks.10/Add_output_0", "/_blocks.14/Add_output_0"],
    "resnet18": [
        "/layer2/layer2.1/relu_1/Relu_output_0",
        "/layer3/layer3.1/relu_1/Relu_output_0",
        "/layer4/layer4.1/relu_1/Relu_output_0",
    ],
}


def resolve_layer(model, name):
    """A tensor by name; in a QDQ graph, the dequantised copy of it when there is one."""
    produced = {o for n in model.graph.node for o in n.output}
    if name not in produced:
        raise ValueError(f"no tensor {name!r} in the graph")
    for n in model.graph.node:
        if n.op_type == "QuantizeLinear" and n.input[0] == name:
            for m in model.graph.node:
                if m.op_type == "DequantizeLinear" and m.input[0] == n.output[0]:
                    return m.output[0]
    return name


def add_gap_outputs(model, layers):
    g = model.graph
    names = []
    for i, t in enumerate(layers):
        g.node.append(helper.make_node("GlobalAveragePool", [t], [f"ood_gap{i}"], name=f"ood_gap{i}"))
        g.node.append(helper.make_node("Flatten", [f"ood_gap{i}"], [f"ood_flat{i}"], name=f"ood_flat{i}"))
        names.append(f"ood_flat{i}")
    return names


class Gate:
    """Sum over layers of the standardised Mahalanobis distance to the nearest class."""

    def __init__(self, feats, labels, n_classes, shrink):
        self.parts = []
        for f in feats:
            m = Mahalanobis(f, labels, n_classes, shrink)
            s = m.score(f)
            self.parts.append((m, float(np.median(s)), float(np.std(s))))

    def score(self, feats):
        return sum((m.score(f) - mu) / sd for (m, mu, sd), f in zip(self.parts, feats))

    def to_graph(self, model, flat_names, output=OOD_OUTPUT):
        g = model.graph
        terms = []
        for i, ((m, mu, sd), x) in enumerate(zip(self.parts, flat_names)):
            p = f"ood{i}_"
            g.initializer.extend(
                [
                    numpy_helper.from_array(m.w, p + "whiten"),
                    numpy_helper.from_array(m.centres, p + "centres"),
                    numpy_helper.from_array(np.array([1], np.int64), p + "axis"),
                    numpy_helper.from_array(np.array(mu, np.float32), p + "mu"),
                    numpy_helper.from_array(np.array(1.0 / sd, np.float32), p + "inv_sd"),
                ]
            )
            g.node.extend(
                [
                    helper.make_node("MatMul", [x, p + "whiten"], [p + "z"], name=p + "mm"),
                    helper.make_node("Sub", [p + "z", p + "centres"], [p + "diff"], name=p + "sub"),
                    helper.make_node("Mul", [p + "diff", p + "diff"], [p + "sq"], name=p + "sq"),
                    helper.make_node("ReduceSum", [p + "sq", p + "axis"], [p + "dist"], keepdims=0, name=p + "sum"),
                    helper.make_node("ReduceMin", [p + "dist"], [p + "min"], keepdims=0, name=p + "min"),
                    helper.make_node("Sub", [p + "min", p + "mu"], [p + "c"], name=p + "centre"),
                    helper.make_node("Mul", [p + "c", p + "inv_sd"], [p + "std"], name=p + "scale"),
                ]
            )
            terms.append(p + "std")
        g.node.append(helper.make_node("Sum", terms, [output], name="ood_total"))


def strip_extras(model):
    """The plain classifier: only the first output (logits) and what it needs, so a bundle that
    already carries a gate (and class-activation maps) can be refitted."""
    g = model.graph
    keep_out = g.output[0]
    by_out = {o: n for n in g.node for o in n.output}
    need, stack = set(), [keep_out.name]
    while stack:
        t = stack.pop()
        n = by_out.get(t)
        if n is None or id(n) in need:
            continue
        need.add(id(n))
        stack.extend(i for i in n.input if i)
    nodes = [n for n in g.node if id(n) in need]
    used = {i for n in nodes for i in n.input}
    inits = [i for i in g.initializer if i.name in used]
    del g.node[:]
    g.node.extend(nodes)
    del g.initializer[:]
    g.initializer.extend(inits)
    del g.output[1:]
    return model


def everyday_variants(img, seed, k=2):
    """`k` of the ways the hidden probes vary an everyday photo: inverted, grey, a crop (35-70 %
    of the side), a quarter / half turn, a mirror image."""
    from PIL import ImageOps

    rng = np.random.default_rng(seed)
    out = []
    for kind in rng.choice(["invert", "grey", "crop", "rotate", "mirror"], k, replace=False):
        if kind == "invert":
            v = ImageOps.invert(img)
        elif kind == "grey":
            v = ImageOps.grayscale(img).convert("RGB")
        elif kind == "crop":
            f = rng.uniform(0.35, 0.7)
            w, h = int(img.width * f), int(img.height * f)
            x, y = int(rng.integers(0, img.width - w + 1)), int(rng.integers(0, img.height - h + 1))
            v = img.crop((x, y, x + w, y + h))
        elif kind == "rotate":
            v = img.rotate(int(rng.choice([90, 180, 270])), expand=True)
        else:
            v = ImageOps.mirror(img)
        out.append((str(kind), v))
    return out


def inverted(img):
    from PIL import ImageOps

    return ImageOps.invert(img)


class Supervised:
    """Lesion vs everyday photo: a logistic regression on the same pooled stage features,
    fitted on lesions (train + a colour-shifted copy) against the non-lesion dev half, its
    everyday variants (inverted, grey, crops, turns, mirror) and inverted lesions. The distance
    gate is unsupervised: photos of animals or grass can sit closer to the lesions than to
    anything it knows; this learns the boundary from examples."""

    def __init__(self, pos, neg, l2=1e-2, steps=300):
        import torch

        x = np.concatenate([pos, neg]).astype(np.float32)
        self.mean = x.mean(0)
        self.inv_std = (1.0 / (x.std(0) + 1e-6)).astype(np.float32)
        xs = torch.from_numpy((x - self.mean) * self.inv_std)
        y = torch.from_numpy(np.r_[np.zeros(len(pos)), np.ones(len(neg))].astype(np.float32))
        # Both classes weigh the same in the loss whatever their counts.
        wt = torch.where(y > 0, 0.5 / len(neg), 0.5 / len(pos))
        torch.manual_seed(0)
        w = torch.zeros(x.shape[1], requires_grad=True)
        b = torch.zeros(1, requires_grad=True)
        opt = torch.optim.LBFGS([w, b], max_iter=steps, line_search_fn="strong_wolfe")

        def closure():
            opt.zero_grad()
            z = xs @ w + b
            loss = (wt * torch.nn.functional.binary_cross_entropy_with_logits(z, y, reduction="none")).sum()
            loss = loss + l2 * (w * w).sum() / 2
            loss.backward()
            return loss

        opt.step(closure)
        self.w = w.detach().numpy().astype(np.float32)
        self.b = float(b.item())

    def logit(self, feats):
        x = np.concatenate(feats, 1) if isinstance(feats, list) else feats
        return ((x - self.mean) * self.inv_std) @ self.w + self.b

    def to_graph(self, model, flat_names, maha, threshold, lr_threshold, scale):
        """OOD_OUTPUT = max(maha, threshold + scale * (logit - lr_threshold)): over the
        threshold when either part is."""
        g = model.graph
        p = "ood_sup_"
        g.initializer.extend(
            [
                numpy_helper.from_array(self.mean.reshape(1, -1).astype(np.float32), p + "mean"),
                numpy_helper.from_array(self.inv_std.reshape(1, -1).astype(np.float32), p + "inv_std"),
                numpy_helper.from_array(self.w.reshape(-1, 1).astype(np.float32), p + "w"),
                numpy_helper.from_array(np.array(self.b - lr_threshold, np.float32), p + "b"),
                numpy_helper.from_array(np.array(scale, np.float32), p + "scale"),
                numpy_helper.from_array(np.array(threshold, np.float32), p + "threshold"),
            ]
        )
        g.node.extend(
            [
                helper.make_node("Concat", flat_names, [p + "x"], axis=1, name=p + "concat"),
                helper.make_node("Sub", [p + "x", p + "mean"], [p + "c"], name=p + "centre"),
                helper.make_node("Mul", [p + "c", p + "inv_std"], [p + "z"], name=p + "standardise"),
                helper.make_node("MatMul", [p + "z", p + "w"], [p + "mm"], name=p + "mm"),
                helper.make_node("ReduceSum", [p + "mm"], [p + "dot"], keepdims=0, name=p + "flatten"),
                helper.make_node("Add", [p + "dot", p + "b"], [p + "logit"], name=p + "logit"),
                helper.make_node("Mul", [p + "logit", p + "scale"], [p + "scaled"], name=p + "scaled"),
                helper.make_node("Add", [p + "scaled", p + "threshold"], [p + "score"], name=p + "score"),
                helper.make_node("Max", [maha, p + "score"], [OOD_OUTPUT], name="ood_total_max"),
            ]
        )


def add_cam(model):
    g = model.graph
    fmap, _, fc = graph_tail(model)
    w = initializer(model, fc.input[1])
    if not next((a.i for a in fc.attribute if a.name == "transB"), 0):
        w = w.T
    g.initializer.append(numpy_helper.from_array(w[:, :, None, None].astype(np.float32), "cam_weight"))
    g.node.append(helper.make_node("Conv", [fmap, "cam_weight"], [CAM_OUTPUT], name="cam_conv"))
    g.output.append(helper.make_tensor_value_info(CAM_OUTPUT, TensorProto.FLOAT, [1, w.shape[0], "h", "w"]))


def fit_cmd(args):
    """Fit the gate on train (+ colour-shifted train) and, unless turned off, the supervised
    lesion-vs-everyday part on the non-lesion dev half; set both thresholds on lesion-clean val;
    measure on the non-lesion test half (per category and on its everyday variants), inverted
    lesions and colour-shifted val; write the bundle's ONNX with `ood` and `cam` outputs and the
    manifest sections. A bundle that already has a gate is refitted from its plain classifier."""
    from .bundle import read_manifest

    bdir = Path(args.bundle)
    man = read_manifest(bdir)
    layers = args.layers.split(",") if args.layers else DEFAULT_LAYERS[man["architecture"]]
    probe = strip_extras(onnx.load(str(bdir / "model.onnx")))
    flat = add_gap_outputs(probe, [resolve_layer(probe, t) for t in layers])
    for n in flat:
        probe.graph.output.append(helper.make_tensor_value_info(n, TensorProto.FLOAT, None))
    tmp = bdir / "features.tmp.onnx"
    onnx.save(probe, str(tmp))
    try:
        sess = ort_session(tmp, args.threads)
    finally:
        tmp.unlink()
    spec, name = man["input"], sess.get_inputs()[0].name

    widths = {}

    def feats(images):
        out = [[] for _ in flat]
        for img in images:
            x = data.preprocess_pil(img, spec)[None]
            r = sess.run(None, {name: x})[1:]
            for i, v in enumerate(r):
                out[i].append(np.asarray(v).reshape(-1))
        # An empty list (no variants, an empty folder) gives 0 rows of the stage's width.
        res = [
            np.asarray(o, np.float32).reshape(len(o), -1) if o else np.zeros((0, widths.get(i, 0)), np.float32)
            for i, o in enumerate(out)
        ]
        widths.update({i: r.shape[1] for i, r in enumerate(res) if len(r)})
        return res

    def images(paths, tf=None):
        for p in paths:
            img = data.load_rgb(p)
            yield tf(img) if tf else img

    def variants(paths, seed0):
        kinds = []

        def gen():
            for i, p in enumerate(paths):
                for kind, v in everyday_variants(data.load_rgb(p), seed0 + i):
                    kinds.append(kind)
                    yield v

        return gen, kinds

    classes, train, val = lesion_splits(args.data)
    if args.limit_per_class:
        train = data.first_per_class(train, args.limit_per_class, len(classes))
        val = data.first_per_class(val, args.limit_per_class, len(classes))
    ytr = np.array([s.label for s in train])
    ood_dev, ood_test = image_list(Path(args.ood) / "dev"), image_list(Path(args.ood) / "test")
    train_inv_paths = [s.path for s in train[::2]]
    # Features are cached by bundle, layers and image lists: refitting is then seconds.
    key = hashlib.sha256(
        json.dumps(
            [
                man["sha256"],
                layers,
                [str(s.path) for s in train + val],
                [str(p) for p in ood_dev + ood_test],
                "v4",
            ]
        ).encode()
    ).hexdigest()[:16]
    cache = data.HERE.parent / "target" / "ood-cache" / f"{man['name']}-{key}.npz"
    parts = ["train", "train_shift", "val", "val_shift", "dev", "test", "dev_var", "test_var", "train_inv", "val_inv"]
    if cache.exists():
        z = np.load(cache)
        f = {k: [z[f"{k}{i}"] for i in range(len(flat))] for k in parts}
        dev_kinds, test_kinds = list(z["dev_kinds"]), list(z["test_kinds"])
        print(f"features from {cache}", flush=True)
    else:
        f = {}
        f["train"] = feats(images([s.path for s in train]))
        f["train_shift"] = feats(images([s.path for s in train], colour_shift(11)))
        print(f"features: train {len(train)} (+ colour-shifted)", flush=True)
        f["val"] = feats(images([s.path for s in val]))
        f["val_shift"] = feats(images([s.path for s in val], colour_shift(1)))
        f["dev"], f["test"] = feats(images(ood_dev)), feats(images(ood_test))
        gen, dev_kinds = variants(ood_dev, 0)
        f["dev_var"] = feats(gen())
        gen, test_kinds = variants(ood_test, 100_000)
        f["test_var"] = feats(gen())
        f["train_inv"] = feats(images(train_inv_paths, inverted))
        f["val_inv"] = feats(images([s.path for s in val], inverted))
        cache.parent.mkdir(parents=True, exist_ok=True)
        np.savez(
            cache,
            dev_kinds=np.array(dev_kinds),
            test_kinds=np.array(test_kinds),
            **{f"{k}{i}": f[k][i] for k in parts for i in range(len(flat))},
        )
    print(
        f"features: val {len(val)} (+ colour-shifted), non-lesion dev {len(ood_dev)} test {len(ood_test)}", flush=True
    )
    gate = Gate(
        [np.concatenate([a, b]) for a, b in zip(f["train"], f["train_shift"])],
        np.concatenate([ytr, ytr]),
        len(classes),
        args.shrink,
    )
    maha = {k: gate.score(v) for k, v in f.items()}
    threshold = quantile_threshold(maha["val"], args.turn_away)
    sup = None
    score = dict(maha)
    if args.supervised_turn_away > 0:
        cat = lambda k: np.concatenate(f[k], 1)
        sup = Supervised(
            np.concatenate([cat("train"), cat("train_shift")]),
            np.concatenate([cat("dev"), cat("dev_var"), cat("train_inv")]),
            l2=args.l2,
        )
        logit = {k: sup.logit(cat(k)) for k in f}
        lr_threshold = quantile_threshold(logit["val"], args.supervised_turn_away)
        scale = float(np.std(maha["val"]) / max(np.std(logit["val"]), 1e-6))
        score = {k: np.maximum(maha[k], threshold + scale * (logit[k] - lr_threshold)) for k in f}

    def auroc(a, b):
        return metrics.auc_binary(np.concatenate([a, b]), np.r_[np.zeros(len(a), bool), np.ones(len(b), bool)])

    def caught(s):
        return float(np.mean(s > threshold)) if len(s) else None

    def by_group(s, groups):
        groups = np.asarray(groups)
        return {g: {"images": int((groups == g).sum()), "caught": caught(s[groups == g])} for g in sorted(set(groups))}

    category = lambda p: p.name.split("__")[0] if "__" in p.name else "other"
    sources = sorted({s.source for s in val})
    src = np.array([s.source for s in val])
    sv = score["val"]
    report = {
        "method": "sum over stages of the standardised Mahalanobis distance to the nearest class mean "
        f"(shared covariance, shrinkage {args.shrink:g}), fitted on train + a colour-shifted copy"
        + (
            "; or over it when a logistic regression on the same stage features (lesions vs the "
            "non-lesion dev half, its everyday variants and inverted lesions) says not a lesion"
            if sup
            else ""
        ),
        "layers": layers,
        "threshold_rule": f"{1 - args.turn_away:.3f} quantile of lesion-clean val scores"
        + (f" (distance); {1 - args.supervised_turn_away:.3f} quantile (logistic part)" if sup else ""),
        "val_turned_away": float(np.mean(sv > threshold)),
        "val_turned_away_per_source": {k: float(np.mean(sv[src == k] > threshold)) for k in sources},
        "colour_shifted_val_turned_away": float(np.mean(score["val_shift"] > threshold)),
        "non_lesion_dev": {
            "images": len(ood_dev),
            "auroc": auroc(sv, score["dev"]),
            "caught": caught(score["dev"]),
        },
        "non_lesion_test": {
            "images": len(ood_test),
            "auroc": auroc(sv, score["test"]),
            "caught": caught(score["test"]),
            "missed": [p.name for p, x in zip(ood_test, score["test"]) if x <= threshold],
            "per_category": by_group(score["test"], [category(p) for p in ood_test]),
            "variants": {"images": len(test_kinds), **by_group(score["test_var"], test_kinds)},
        },
        "inverted_val_lesions_caught": caught(score["val_inv"]),
        "distance_only": {
            "non_lesion_test_caught": caught(maha["test"]),
            "variants_caught": caught(maha["test_var"]),
            "inverted_val_lesions_caught": caught(maha["val_inv"]),
            "val_turned_away": float(np.mean(maha["val"] > threshold)),
        },
        "val_images": len(val),
    }
    model = strip_extras(onnx.load(str(bdir / "model.onnx")))
    flat = add_gap_outputs(model, [resolve_layer(model, t) for t in layers])
    gate.to_graph(model, flat, output="ood_maha" if sup else OOD_OUTPUT)
    if sup:
        sup.to_graph(model, flat, "ood_maha", threshold, lr_threshold, scale)
        report["supervised"] = {
            "features": int(sum(x.shape[1] for x in f["train"])),
            "l2": args.l2,
            "negatives": {
                "non_lesion_dev": len(ood_dev),
                "everyday_variants": len(dev_kinds),
                "inverted_train_lesions": len(train_inv_paths),
            },
            "val_turned_away": float(np.mean(logit["val"] > lr_threshold)),
        }
    model.graph.output.append(helper.make_tensor_value_info(OOD_OUTPUT, TensorProto.FLOAT, []))
    add_cam(model)
    onnx.checker.check_model(model)
    out = Path(args.out or bdir)
    out.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(out / "model.onnx"))
    # The graph must give the score fitted here, on lesions and on non-lesion images.
    check = ort_session(out / "model.onnx", args.threads)
    got, want = [], []
    for p, s_ in list(zip([s.path for s in val[:6]], sv[:6])) + list(zip(ood_test[:6], score["test"][:6])):
        x = data.preprocess_pil(data.load_rgb(p), spec)[None]
        got.append(float(check.run(["ood"], {name: x})[0]))
        want.append(float(s_))
    diff = float(np.max(np.abs(np.array(got) - np.array(want))))
    assert diff < 1e-2 * max(1.0, float(np.abs(want).max())), f"graph score differs from the fit by {diff}"
    from . import bundle

    if out != bdir:
        shutil.copyfile(bdir / bundle.MANIFEST, out / bundle.MANIFEST)
    bundle.update_manifest(
        out,
        ood={"output": OOD_OUTPUT, "threshold": threshold, **report, "command": args.command_line},
        cam={"output": CAM_OUTPUT},
        sha256=bundle.sha256(out / "model.onnx"),
    )
    print(json.dumps({k: v for k, v in report.items() if k not in ("layers",)}, indent=1))
    print(f"wrote {out} (threshold {threshold:.3f}; graph vs fit max diff {diff:.2e})")


CARD_MARK = "## Not a lesion (the v3 gate)"


def card_section(man):
    o = man["ood"]
    dev, test = o["non_lesion_dev"], o["non_lesion_test"]
    per = ", ".join(f"{k} {v:.1%}" for k, v in o["val_turned_away_per_source"].items())
    missed = ", ".join(f"`{m}`" for m in test["missed"]) or "none"
    rows = ""
    if "per_category" in test:
        cats = ", ".join(f"{k} {v['caught']:.0%} of {v['images']}" for k, v in test["per_category"].items())
        var = test["variants"]
        kinds = ", ".join(f"{k} {v['caught']:.1%}" for k, v in var.items() if k != "images")
        d = o["distance_only"]
        rows = f"""| test half per category (caught) | {cats} |
| everyday variants of the test half ({var["images"]}: inverted, grey, crops, turns, mirror) | {kinds} |
| inverted val lesions caught | {o["inverted_val_lesions_caught"]:.1%} |
| the distance part alone (before the logistic part) | test half {d["non_lesion_test_caught"]:.1%}, variants {d["variants_caught"]:.1%}, inverted lesions {d["inverted_val_lesions_caught"]:.1%}; val turned away {d["val_turned_away"]:.1%} |
"""
    return f"""{CARD_MARK}

Graph output `{o["output"]}`: {o["method"]}. Stages: {", ".join(f"`{x}`" for x in o["layers"])}.
Over the threshold ({o["threshold"]:.3f}, the {o["threshold_rule"]}) the device says
"not a lesion": no class, no referral. Class-activation maps: graph output `{man["cam"]["output"]}`.

| measured | value |
|---|---|
| lesion-clean val lesions turned away | {o["val_turned_away"]:.1%} of {o["val_images"]} ({per}) |
| colour-shifted copy of that val (gains, gamma, JPEG) turned away | {o["colour_shifted_val_turned_away"]:.1%} |
| non-lesion images, dev half (fitted the logistic part; chose layers, shrinkage, turn-away shares) | AUROC {dev["auroc"]:.3f}; {dev["caught"]:.1%} of {dev["images"]} caught |
| non-lesion images, **test half** (reported, never tuned on) | AUROC {test["auroc"]:.3f}; {test["caught"]:.1%} of {test["images"]} caught |
{rows}
Missed in the test half: {missed}. The non-lesion set (`models/ood_sources.sh`, then
`python -m dermtrain ood-set`): everyday photos and drawings from Debian packages (GCompris'
photos of animals, people, places and objects; Tux Paint's photo stamps of animals, plants,
food and objects; OpenCV's samples), wallpapers (GNOME, MATE, UKUI, Lomiri, Plasma), a game's
terrain textures, plus synthetic images (flat colours, gradients, noise, stripes, printed text,
screens); none of the reserved sample sets. Command: `{o.get("command", "")}`.
"""


def card_cmd(args):
    from .bundle import read_manifest

    for b in args.bundles:
        man = read_manifest(b)
        path = Path(b) / "MODEL_CARD.md"
        text = path.read_text() if path.exists() else ""
        if CARD_MARK in text:
            head, _, rest = text.partition(CARD_MARK)
            nxt = rest.find("\n## ")
            text = head + card_section(man) + (rest[nxt:] if nxt >= 0 else "")
        else:
            text = text.rstrip() + "\n\n" + card_section(man)
        path.write_text(text)
        print(f"updated {path}")


def colour_check_cmd(args):
    """Balanced accuracy and ECE on lesion-clean val and on a colour-shifted copy, with and
    without Shades-of-Gray colour constancy in the preprocessing (no retraining)."""
    from .bundle import read_manifest

    man = read_manifest(args.bundle)
    _, _, val = lesion_splits(args.data)
    y = np.array([s.label for s in val])
    sess = ort_session(Path(args.bundle) / "model.onnx", args.threads)
    name = sess.get_inputs()[0].name
    out = {}
    for cc in (None, {"kind": "shades_of_gray", "p": args.p}):
        spec = {k: v for k, v in man["input"].items() if k != "colour_constancy"}
        if cc:
            spec["colour_constancy"] = cc
        for shifted in (False, True):
            tf = colour_shift(1) if shifted else None
            logits = []
            for s in val:
                img = data.load_rgb(s.path)
                x = data.preprocess_pil(tf(img) if tf else img, spec)[None]
                logits.append(sess.run(None, {name: x})[0][0])
            probs = metrics.softmax(np.asarray(logits), man["temperature"])
            pred = probs.argmax(1)
            bacc = float(np.mean([np.mean(pred[y == k] == k) for k in np.unique(y)]))
            key = f"{'sog' if cc else 'plain'}_{'shifted' if shifted else 'val'}"
            out[key] = {"balanced_accuracy": bacc, "ece": metrics.ece(probs, y)}
            print(key, out[key], flush=True)
    print(json.dumps(out))
