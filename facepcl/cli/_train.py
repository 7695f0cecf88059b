"""``facepcl train``: PCL pretraining (needs the ``[train]`` extra)."""

from __future__ import annotations

import argparse
import sys


def add_parser(sub) -> None:
    p = sub.add_parser(
        "train", help="pretrain a PCL model (the paper's recipe; needs pip install \"facepcl[train]\")",
        description="PCL pretraining: three steps per iteration (reconstruction + orthogonality, face contrastive, "
                    "pose contrastive), DWA, Adam with cosine annealing. Multi-GPU: torchrun -m facepcl.train.",
        epilog="examples:\n"
               "  facepcl train pcl data.root=/data/vox_aligned output_dir=runs/pcl\n"
               "  facepcl train smoke data.root=frames/ train.max_steps=10\n"
               "  torchrun --nproc-per-node 8 -m facepcl.train pcl data.root=/data/vox_aligned\n"
               "CONFIG is a YAML file or a bundled recipe (pcl, smoke); overrides are dotted keys with YAML\n"
               "values. Batch sizes are global. See docs/training.md.",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("config", help="YAML config file, or a bundled recipe name: pcl, smoke")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides, e.g. batch.rec=64")
    p.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    try:
        from ..train import main
    except ImportError as e:
        print(f"facepcl train: error: {e}", file=sys.stderr)
        return 1
    argv = [args.config, *args.overrides] + (["--print-config"] if args.print_config else [])
    return main(argv)
