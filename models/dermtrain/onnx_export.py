"""ONNX export of a trained network, checked against PyTorch on real images, and the ONNX Runtime
helpers the other export steps (calibration, int8, parity, ort-bench) share."""

import numpy as np

PARITY_IMAGES = 16
PARITY_BOUND = 1e-3


def ort_session(path, threads=0):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def ort_logits(sess, x):
    name = sess.get_inputs()[0].name
    return np.concatenate([sess.run(None, {name: x[i : i + 1]})[0] for i in range(len(x))])


def export_onnx(model, size, path, xva):
    """Write `model` as ONNX (opset 13, batch 1, logits) and return an ONNX Runtime session on it.
    ORT must reproduce PyTorch on real images (`xva`) before anything ships."""
    import torch

    torch.onnx.export(
        model,
        torch.zeros(1, 3, size, size),
        str(path),
        opset_version=13,
        input_names=["input"],
        output_names=["logits"],
        do_constant_folding=True,
    )
    sess = ort_session(path)
    k = min(PARITY_IMAGES, len(xva))
    with torch.no_grad():
        pt = model(torch.from_numpy(xva[:k])).numpy()
    diff = float(np.abs(ort_logits(sess, xva[:k]) - pt).max())
    print(f"ORT vs PyTorch max |logit diff| on {k} val images: {diff:.2e} (bound {PARITY_BOUND:g})")
    assert diff <= PARITY_BOUND, f"ONNX export disagrees with PyTorch: {diff}"
    return sess
