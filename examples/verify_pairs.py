"""Face verification on LFW (pairs.txt) or CPLFW (pairs_CPLFW.txt): 10-fold accuracy.

For each of the 10 folds the cosine threshold is chosen on the other 9 folds; with a trained
head (BN+Linear, cosine-embedding loss) the head is trained on the other folds too.

Real data::

    python examples/verify_pairs.py --dataset lfw --data ~/data/lfw-aligned --model ORG/NAME
    python examples/verify_pairs.py --dataset lfw --data ~/data/lfw --detect   # raw LFW: detect + align

A tiny generated run::

    python examples/verify_pairs.py --demo

The same as one command: ``facepcl evaluate --dataset lfw --data DIR``.
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
from pathlib import Path

import facepcl
from facepcl.eval.datasets import read_cplfw, read_lfw
from facepcl.eval.protocols import PROTOCOLS, RunOptions, run_protocol


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", choices=("lfw", "cplfw"), default="lfw")
    p.add_argument("--data", help="folder holding the pairs file and the images")
    p.add_argument("--model", default=None)
    p.add_argument("--detect", action="store_true", help="detect and align faces (default: aligned crops)")
    p.add_argument("--no-head", action="store_true", help="cosine of the raw features, nothing trained")
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--demo", action="store_true", help="generate a tiny pairs dataset and a random-weight model")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        if args.demo:
            from facepcl.eval import demo

            make = demo.make_lfw if args.dataset == "lfw" else demo.make_cplfw
            args.data = str(make(Path(tmp) / args.dataset))
            facepcl.PCLModel(facepcl.PCLConfig()).save_pretrained(Path(tmp) / "model")
            args.model, args.epochs = str(Path(tmp) / "model"), args.epochs or 5
        if not args.data:
            p.error("--data is required (or --demo)")
        pairs = read_lfw(args.data) if args.dataset == "lfw" else read_cplfw(args.data)
        options = RunOptions(detect=args.detect, head="none" if args.no_head else None,
                             cache_dir=Path(tmp) / "features" if args.demo else None,
                             input_size=64 if args.demo else None)  # the demo runs at 64 px to stay quick
        if args.epochs:
            options.train = dataclasses.replace(PROTOCOLS["verify"].train, epochs=args.epochs)
        result = run_protocol(facepcl.load(args.model), "verify", pairs, args.dataset, options)
        print(result.report.table())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
