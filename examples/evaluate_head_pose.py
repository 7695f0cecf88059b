"""Head pose (yaw, pitch, roll) on 300W-LP -> AFLW2000 in FSA-Net's .npz format: the paper's protocol.

Real data (FSA-Net's ``TYY_create_db_type1.py`` output)::

    python examples/evaluate_head_pose.py --train ~/data/300W_LP --test ~/data/AFLW2000.npz --model ORG/NAME

(the paper: trunk F at 256 px, BatchNorm1d + Linear(32768, 3), AdamW lr 1e-3, L1, 300 epochs, batch 128).
A tiny generated run (random-weight model, 64 px to keep it quick)::

    python examples/evaluate_head_pose.py --demo

The same as one command: ``facepcl evaluate --dataset fsanet --data 300W_LP --test-data AFLW2000.npz``.
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
from pathlib import Path

import facepcl
from facepcl.eval.datasets import read_fsanet_npz
from facepcl.eval.protocols import PROTOCOLS, RunOptions, run_protocol


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--train", help="300W-LP: a folder of FSA-Net .npz files (or one file)")
    p.add_argument("--test", help="AFLW2000.npz")
    p.add_argument("--model", default=None)
    p.add_argument("--epochs", type=int, default=None, help="default: the paper's 300")
    p.add_argument("--input-size", type=int, default=None, help="default: the paper's 256")
    p.add_argument("--demo", action="store_true", help="generate tiny .npz files and a random-weight model")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        if args.demo:
            from facepcl.eval import demo

            demo.make_fsanet(Path(tmp) / "300W_LP" / "AFW.npz", n=120, seed=1)
            demo.make_fsanet(Path(tmp) / "AFLW2000.npz", n=40, seed=2, extreme=3)
            facepcl.PCLModel(facepcl.PCLConfig()).save_pretrained(Path(tmp) / "model")
            args.train, args.test = str(Path(tmp) / "300W_LP"), str(Path(tmp) / "AFLW2000.npz")
            args.model, args.epochs, args.input_size = str(Path(tmp) / "model"), args.epochs or 40, 64
        if not (args.train and args.test):
            p.error("--train and --test are required (or --demo)")
        data = {"train": read_fsanet_npz(args.train), "test": read_fsanet_npz(args.test)}
        print(f"train {len(data['train'])} faces, test {len(data['test'])} faces "
              f"({data['test'].info['dropped']} test faces with |angle| > 99 degrees left out, as in the reference)")
        options = RunOptions(input_size=args.input_size, cache_dir=Path(tmp) / "features" if args.demo else None)
        if args.epochs:
            options.train = dataclasses.replace(PROTOCOLS["pose"].train, epochs=args.epochs)
        result = run_protocol(facepcl.load(args.model), "pose", data, "aflw2000", options)
        print(result.report.table())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
