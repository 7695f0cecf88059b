"""``facepcl train``: PCL pretraining (needs the ``[train]`` extra).

The arguments are defined once here; ``python -m facepcl.train`` and
``torchrun -m facepcl.train`` run this same command. This module stays light:
it imports the training package only when a training runs.
"""

from __future__ import annotations

import argparse
import sys

DESCRIPTION = ("PCL pretraining: three steps per iteration (reconstruction + orthogonality, face contrastive, "
               "pose contrastive), DWA, Adam with cosine annealing. Multi-GPU: torchrun -m facepcl.train.")
EPILOG = """examples:
  facepcl prepare videos/ -o frames/ && facepcl train smoke data.root=frames/ train.max_steps=10
  facepcl train check data.root=frames/          # does every loss fall? prints a verdict
  facepcl train pcl data.root=/data/vox_aligned output_dir=runs/pcl
  torchrun --nproc-per-node 8 -m facepcl.train pcl data.root=/data/vox_aligned
CONFIG is a YAML file or a bundled recipe (pcl, smoke, check); overrides are dotted keys with YAML
values. Batch sizes are global (any number of processes). See docs/training.md."""


def add_parser(sub) -> None:
    p = sub.add_parser(
        "train", help="pretrain a PCL model (the paper's recipe; needs pip install \"facepcl[train]\")",
        description=DESCRIPTION, epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("config", help="YAML config file, or a bundled recipe name: pcl, smoke, check")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides, e.g. batch.rec=64")
    p.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    try:
        from ..train.config import load_config
        from ..train.run import main
    except ImportError as e:
        print(f"facepcl train: error: {e}", file=sys.stderr)
        return 1
    if args.print_config:
        print(load_config(args.config, args.overrides).to_yaml(), end="")
        return 0
    return main([args.config, *args.overrides])
