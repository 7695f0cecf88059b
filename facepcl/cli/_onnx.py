"""``facepcl onnx MODEL -o DIR``: the encoder and task heads as ONNX, with the preprocessing."""

from __future__ import annotations

import argparse

from .._utils.paths import refuse_url


def add_parser(sub) -> None:
    p = sub.add_parser("onnx", help="export the encoder (and task heads) to ONNX for use without facepcl",
                       description="Write DIR/encoder.onnx (input 'pixels', outputs 'face', 'pose', 'trunk'; "
                                   "dynamic batch), DIR/head-NAME.onnx for each --head, DIR/config.json with the "
                                   "preprocessing and DIR/README.md on how to use them. ONNX Runtime's outputs are "
                                   "checked against PyTorch's before the folder is complete.")
    p.add_argument("model", help="facepcl.load name, Hub id or folder (e.g. pcl-demo)")
    p.add_argument("-o", "--output", dest="out", required=True, metavar="DIR", help="folder to write")
    p.add_argument("--revision", default=None, help="Hub branch, tag or commit to pin")
    p.add_argument("--head", action="append", default=None, metavar="NAME",
                   help="task head to export too (repeatable; found next to the model, see facepcl.load)")
    p.add_argument("--opset", type=int, default=17, help="ONNX opset (default 17)")
    p.add_argument("--overwrite", action="store_true", help="replace the ONNX model already in DIR")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    refuse_url(args.out, "-o")
    import facepcl

    from ..deploy import export_onnx

    model = facepcl.load(args.model, revision=args.revision, device="cpu", head=args.head)
    out = export_onnx(model, args.out, overwrite=args.overwrite, opset=args.opset)
    names = sorted(p.name for p in out.iterdir() if not p.name.startswith("."))
    print(f"wrote {out} ({', '.join(names)}); ONNX Runtime matches PyTorch on the check batch")
    return 0
