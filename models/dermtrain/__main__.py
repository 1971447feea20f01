"""Command line: `python -m dermtrain` (or the `dermtrain` script) train | export | probe |
device-eval | ort-bench | parity."""

import argparse
import shlex
import sys

from . import data

# Without torch installed only the ONNX commands (ood-*, parity, ort-bench) work.
LITE_ARCHES = ["efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2"]
ARCHES = ["resnet18", *LITE_ARCHES]


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m dermtrain")
    sub = ap.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("train", help="train a classifier on a dataset folder")
    t.add_argument("--arch", choices=ARCHES, required=True)
    t.add_argument("--recipe", choices=["paper", "best", "v2", "v3"], required=True)
    t.add_argument(
        "--data",
        nargs="+",
        default=[str(d) for d in data.DEFAULT_DATASETS],
        help="dataset folders (default: skin9 and skin9-extra beside the repo)",
    )
    t.add_argument(
        "--holdout",
        action="append",
        metavar="CLASS:ARCHIVE",
        help="leave-one-archive-out: train without these images, report recall on them",
    )
    t.add_argument("--device", help="cpu or cuda (default: cuda when available)")
    t.add_argument("--workers", type=int, default=0, help="decode processes (default: all cores)")
    t.add_argument("--time-budget", type=float, default=0, help="fit the epoch count to this many seconds")
    t.add_argument("--no-checkpoint", action="store_true", help="skip the per-epoch resume checkpoint")
    t.add_argument("--out", required=True, help="run folder (checkpoints, history.csv, curves.png)")
    t.add_argument("--epochs", type=int)
    t.add_argument("--size", type=int)
    t.add_argument("--batch", type=int)
    t.add_argument("--lr", type=float)
    t.add_argument("--crop-min", type=float, help="smallest random-crop area (fraction of the image)")
    t.add_argument("--look-p", type=float, help="share of images downscaled to the common look")
    t.add_argument("--teacher", help="best.pt of a teacher run for knowledge distillation")
    t.add_argument(
        "--kd-views",
        type=int,
        default=0,
        help="distil from N cached augmented views per image with the teacher's logits (0: a fresh view and teacher pass every step)",
    )
    t.add_argument(
        "--init",
        help="warm start (same architecture): a run's best.pt, or a bundle folder (weights from its model.onnx)",
    )
    t.add_argument("--patience", type=int, default=0, help="early stopping (epochs without val gain)")
    t.add_argument("--limit-per-class", type=int, default=0, help="tiny subsets for smoke tests")
    t.add_argument("--threads", type=int, default=0)
    t.add_argument("--seed", type=int, default=1)
    t.add_argument("--resume", action="store_true")
    e = sub.add_parser("export", help="export a run to fp32 + int8 bundles with calibration and a model card")
    e.add_argument("--run", required=True)
    e.add_argument("--data", nargs="+", default=[str(d) for d in data.DEFAULT_DATASETS])
    e.add_argument("--bundle", required=True, help="fp32 bundle folder; int8 goes to <bundle>-int8 unless --no-int8")
    e.add_argument("--name")
    e.add_argument("--calib-images", type=int, default=200)
    e.add_argument("--abstain", type=float, default=0.5)
    e.add_argument("--no-int8", action="store_true")
    e.add_argument(
        "--dermcam",
        default=str(data.HERE.parent / "target" / "release" / "dermcam"),
        help="dermcam binary used to re-measure the bundles (skipped if missing)",
    )
    e.add_argument("--threads", type=int, default=0)
    e.add_argument("--limit-per-class", type=int, default=0)
    pr = sub.add_parser("probe", help="archive probe: do a network's features tell the image collection?")
    pr.add_argument("--run", help="run folder with best.pt")
    pr.add_argument("--imagenet", choices=LITE_ARCHES)
    pr.add_argument("--data", nargs="+", default=[str(d) for d in data.DEFAULT_DATASETS])
    pr.add_argument("--out")
    pr.add_argument("--device")
    pr.add_argument("--limit", type=int, default=0)
    pr.add_argument("--threads", type=int, default=0)
    pr.add_argument("--workers", type=int, default=0)
    d = sub.add_parser("device-eval", help="re-measure bundles with `dermcam eval` and rewrite their model cards")
    d.add_argument("bundles", nargs="+")
    d.add_argument("--run", help="run folder (history.csv)")
    d.add_argument("--data", nargs="+", default=[str(x) for x in data.DEFAULT_DATASETS])
    d.add_argument("--checks", help="JSON with leave-one-archive-out and archive-probe results")
    d.add_argument("--dermcam", default=str(data.HERE.parent / "target" / "release" / "dermcam"))
    b = sub.add_parser("ort-bench", help="time ONNX Runtime on a bundle (for the tract/ORT ratio)")
    b.add_argument("bundles", nargs="+")
    b.add_argument("--iterations", type=int, default=50)
    b.add_argument("--threads", type=int, nargs="+", default=[1, 0])
    p = sub.add_parser("parity", help="write Python reference preprocessing for images (Rust parity test)")
    p.add_argument("--bundle", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("images", nargs="+")
    of = sub.add_parser("ood-fit", help='add the "not a lesion" score and class-activation maps to a bundle')
    of.add_argument("--bundle", required=True)
    of.add_argument("--ood", required=True, help="non-lesion set with dev/ and test/")
    of.add_argument("--data", nargs="+", default=[str(x) for x in data.DEFAULT_DATASETS])
    of.add_argument("--out", help="output bundle folder (default: rewrite --bundle)")
    of.add_argument("--layers", help="comma-separated stage tensors (default: per architecture)")
    of.add_argument(
        "--turn-away", type=float, default=0.015, help="share of lesion-clean val lesions over the threshold"
    )
    of.add_argument("--shrink", type=float, default=0.1)
    of.add_argument(
        "--supervised-turn-away",
        type=float,
        default=0.005,
        help="share of lesion-clean val lesions the logistic (lesion vs everyday photo) part may turn away; 0: distance only",
    )
    of.add_argument("--l2", type=float, default=1e-2, help="the logistic part's L2 penalty")
    of.add_argument("--threads", type=int, default=0)
    of.add_argument("--limit-per-class", type=int, default=0)
    cc = sub.add_parser(
        "colour-check", help="balanced accuracy / ECE on val and a colour-shifted copy, with and without Shades of Gray"
    )
    cc.add_argument("--bundle", required=True)
    cc.add_argument("--p", type=float, default=6.0)
    cc.add_argument("--data", nargs="+", default=[str(x) for x in data.DEFAULT_DATASETS])
    cc.add_argument("--threads", type=int, default=0)
    tc = sub.add_parser(
        "tta-check", help="referral and accuracy with flip / eight-view test-time augmentation on lesion-clean val"
    )
    tc.add_argument("--bundle", required=True)
    tc.add_argument("--data", nargs="+", default=[str(x) for x in data.DEFAULT_DATASETS])
    tc.add_argument("--threads", type=int, default=0)
    tc.add_argument("--limit-per-class", type=int, default=0)
    oc = sub.add_parser("ood-card", help="write the not-a-lesion section of bundles' model cards from model.json")
    oc.add_argument("bundles", nargs="+")
    dg = sub.add_parser(
        "degraded-set", help="blurred / motion-blurred / dark / blown-out copies of lesion-clean val lesions"
    )
    dg.add_argument("--out", required=True)
    dg.add_argument("--n", type=int, default=60)
    dg.add_argument("--data", nargs="+", default=[str(x) for x in data.DEFAULT_DATASETS])
    os_ = sub.add_parser(
        "ood-set", help="assemble a non-lesion image set (dev/test by file hash) from folders + synthetic images"
    )
    os_.add_argument("folders", nargs="*", help="folders of images, each optionally CATEGORY=PATH")
    os_.add_argument("--max-per-folder", type=int, default=0, help="at most this many files per folder")
    os_.add_argument("--out", required=True)
    os_.add_argument("--synthetic", type=int, default=60)
    args = ap.parse_args(argv)
    args.command_line = "python -m dermtrain " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:]))
    try:
        if args.cmd == "train":
            from .train import train

            train(args)
        elif args.cmd == "export":
            from .export import export

            export(args)
        elif args.cmd == "probe":
            if not (args.run or args.imagenet):
                ap.error("probe needs --run or --imagenet")
            from .probe import probe

            probe(args)
        elif args.cmd == "device-eval":
            from .device_eval import device_eval_cmd

            device_eval_cmd(args)
        elif args.cmd == "ort-bench":
            from .ortbench import ort_bench

            ort_bench(args)
        elif args.cmd == "parity":
            from .parity import parity

            parity(args)
        elif args.cmd == "ood-fit":
            from .ood import fit_cmd

            fit_cmd(args)
        elif args.cmd == "colour-check":
            from .ood import colour_check_cmd

            colour_check_cmd(args)
        elif args.cmd == "tta-check":
            from .tta import tta_check_cmd

            tta_check_cmd(args)
        elif args.cmd == "ood-card":
            from .ood import card_cmd

            card_cmd(args)
        elif args.cmd == "degraded-set":
            from .oodset import degraded

            degraded(args.data, args.out, args.n)
        elif args.cmd == "ood-set":
            from .oodset import build

            build(args.folders, args.out, args.synthetic, max_per_folder=args.max_per_folder)
    except data.DatasetError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
