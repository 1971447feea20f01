"""`ort-bench`: time ONNX Runtime on bundles (the reference side of the tract/ORT ratio)."""

import json
import os
import time
from pathlib import Path

import numpy as np

from .bundle import read_manifest
from .onnx_export import ort_session


def ort_bench(args):
    for b in args.bundles:
        man = read_manifest(b)
        x = (
            np.random.default_rng(0)
            .standard_normal((1, 3, man["input"]["height"], man["input"]["width"]))
            .astype(np.float32)
        )
        for th in args.threads:
            sess = ort_session(Path(b) / "model.onnx", th)
            name = sess.get_inputs()[0].name
            for _ in range(5):
                sess.run(None, {name: x})
            ts = []
            for _ in range(args.iterations):
                t0 = time.perf_counter()
                sess.run(None, {name: x})
                ts.append((time.perf_counter() - t0) * 1e3)
            ts.sort()
            print(
                json.dumps(
                    {
                        "bundle": man["name"],
                        "runtime": "onnxruntime",
                        "threads": th or os.cpu_count(),
                        "p50_ms": ts[len(ts) // 2],
                        "p90_ms": ts[int(len(ts) * 0.9)],
                    }
                )
            )
