"""Warm start from an exported bundle: the network rebuilt from model.onnx (batch norm folded into
the convolutions by the export) computes what the exported graph computes, before and after its
batch-norm statistics are re-measured."""

import tempfile
import unittest
from pathlib import Path

import numpy as np
import torch
from dermtrain import nets
from dermtrain.onnx_export import export_onnx, ort_logits


def _trained_looking(model):
    # Non-trivial BN statistics and affine parameters, as a trained network has.
    g = torch.Generator().manual_seed(0)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            n = m.num_features
            m.running_mean.copy_(torch.randn(n, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(n, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(n, generator=g) + 0.5)
            m.bias.data.copy_(torch.randn(n, generator=g) * 0.1)
    return model.eval()


class WarmStartTest(unittest.TestCase):
    def check(self, arch, size):
        torch.manual_seed(0)
        model = _trained_looking(nets.build(arch, 9, pretrained=False)[0])
        x = np.random.default_rng(0).standard_normal((3, 3, size, size)).astype(np.float32)
        with tempfile.TemporaryDirectory() as d:
            path = Path(d) / "model.onnx"
            sess = export_onnx(model, size, path, x)
            want = ort_logits(sess, x)
            back = nets.from_onnx(path, arch, 9).eval()
        with torch.no_grad():
            got = back(torch.from_numpy(x)).numpy()
        self.assertLess(np.abs(got - want).max(), 1e-3)
        nets.recalibrate_bn(back, [torch.randn(4, 3, size, size) for _ in range(2)])
        with torch.no_grad():
            again = back.eval()(torch.from_numpy(x)).numpy()
        self.assertLess(np.abs(again - want).max(), 1e-3)
        # Real statistics now: train-mode BN no longer sees a unit-variance stand-in.
        bn = next(m for m in back.modules() if isinstance(m, torch.nn.BatchNorm2d))
        self.assertFalse(torch.allclose(bn.running_var, torch.full_like(bn.running_var, 1 - bn.eps)))

    def test_resnet18(self):
        self.check("resnet18", 64)

    def test_efficientnet_lite0(self):
        self.check("efficientnet_lite0", 64)

    def test_wrong_architecture_is_an_error(self):
        model = _trained_looking(nets.build("resnet18", 9, pretrained=False)[0])
        x = np.zeros((1, 3, 64, 64), np.float32)
        with tempfile.TemporaryDirectory() as d:
            path = Path(d) / "model.onnx"
            export_onnx(model, 64, path, x)
            with self.assertRaisesRegex(ValueError, "not a bundle of efficientnet_lite0"):
                nets.from_onnx(path, "efficientnet_lite0", 9)


if __name__ == "__main__":
    unittest.main()
