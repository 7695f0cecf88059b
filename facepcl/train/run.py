"""Command-line entry: ``facepcl train CONFIG [key=value ...]`` and ``python -m facepcl.train``."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from . import distributed as D
from .config import load_config

USAGE_EXAMPLES = """examples:
  facepcl train pcl data.root=/data/vox_aligned output_dir=runs/pcl
  facepcl train smoke data.root=frames/ precision=fp32 train.max_steps=10
  torchrun --nproc-per-node 8 -m facepcl.train pcl data.root=/data/vox_aligned
CONFIG is a YAML file or a bundled recipe (pcl, smoke); overrides are dotted
keys with YAML values. Batch sizes are global. See docs/training.md."""


def build_parser(prog: str = "facepcl train") -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, description="PCL pretraining (the paper's recipe).",
                                epilog=USAGE_EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("config", help="YAML config file, or a bundled recipe name: pcl, smoke")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides, e.g. batch.rec=64")
    p.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Run a training from an argument list (``sys.argv[1:]`` when None); returns the exit code.

    Example:
        >>> main(["smoke", "data.root=frames", "output_dir=/tmp/run", "train.max_steps=2"])  # doctest: +SKIP
        0
    """
    args = build_parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    cfg = load_config(args.config, args.overrides)
    if args.print_config:
        print(cfg.to_yaml(), end="")
        return 0
    if not logging.getLogger().handlers:  # standalone (python -m, torchrun); the facepcl CLI sets up its own
        logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    env = D.init_distributed(cfg.device)
    logger = logging.getLogger("facepcl.train")
    if logger.level == logging.NOTSET:
        # Rank 0 reports what the run does (resume, checkpoints, export); the others only warnings.
        logger.setLevel(logging.INFO if env.is_main else logging.WARNING)
    try:
        from .trainer import Trainer

        Trainer(cfg, env).fit()
    finally:
        if env.distributed:
            D.shutdown()
    return 0

