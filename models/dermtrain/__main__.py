import argparse
import shlex
import sys

from . import data


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m dermtrain")
    sub = ap.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("train", help="train a classifier on a dataset folder")
    t.add_argument("--arch", choices=["resnet18", "efficientnet_lite0"], required=True)
    t.add_argument("--recipe", choices=["paper", "best"], required=True)
    t.add_argument("--data", default=str(data.DEFAULT_DATA))
    t.add_argument("--out", required=True, help="run folder (checkpoints, history.csv, curves.png)")
    t.add_argument("--epochs", type=int); t.add_argument("--size", type=int)
    t.add_argument("--batch", type=int); t.add_argument("--lr", type=float)
    t.add_argument("--teacher", help="best.pt of a teacher run for knowledge distillation")
    t.add_argument("--init", help="best.pt to start from (warm start; same architecture)")
    t.add_argument("--patience", type=int, default=0, help="early stopping (epochs without val gain)")
    t.add_argument("--limit-per-class", type=int, default=0, help="tiny subsets for smoke tests")
    t.add_argument("--threads", type=int, default=0)
    t.add_argument("--seed", type=int, default=1)
    t.add_argument("--resume", action="store_true")
    e = sub.add_parser("export", help="export a run to fp32 + int8 bundles with calibration and a model card")
    e.add_argument("--run", required=True); e.add_argument("--data", default=str(data.DEFAULT_DATA))
    e.add_argument("--bundle", required=True, help="fp32 bundle folder; int8 goes to <bundle>-int8 unless --no-int8")
    e.add_argument("--name"); e.add_argument("--calib-images", type=int, default=200)
    e.add_argument("--abstain", type=float, default=0.5)
    e.add_argument("--no-int8", action="store_true")
    e.add_argument("--dermcam", default=str(data.HERE.parent / "target" / "release" / "dermcam"),
                   help="dermcam binary used to re-measure the bundles (skipped if missing)")
    e.add_argument("--threads", type=int, default=0)
    e.add_argument("--limit-per-class", type=int, default=0)
    b = sub.add_parser("ort-bench", help="time ONNX Runtime on a bundle (for the tract/ORT ratio)")
    b.add_argument("bundles", nargs="+"); b.add_argument("--iterations", type=int, default=50)
    b.add_argument("--threads", type=int, nargs="+", default=[1, 0])
    p = sub.add_parser("parity", help="write Python reference preprocessing for images (Rust parity test)")
    p.add_argument("--bundle", required=True); p.add_argument("--out", required=True); p.add_argument("images", nargs="+")
    args = ap.parse_args(argv)
    args.command_line = "python -m dermtrain " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:]))
    try:
        if args.cmd == "train":
            from .train import train
            train(args)
        elif args.cmd == "export":
            from .export import export
            export(args)
        elif args.cmd == "ort-bench":
            from .export import ort_bench
            ort_bench(args)
        elif args.cmd == "parity":
            from .export import parity
            parity(args)
    except data.DatasetError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
