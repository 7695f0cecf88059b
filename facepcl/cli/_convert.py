"""``facepcl convert OFFICIAL.pth OUT_DIR``."""

from __future__ import annotations

import argparse

from .._utils.paths import refuse_url


def add_parser(sub) -> None:
    p = sub.add_parser("convert", help="convert an official PCL checkpoint (best.pth) to a facepcl model folder",
                       description="Read an official PCL checkpoint without executing pickled code (in a child "
                                   "process bounded in time and memory), check every key, shape and value, and "
                                   "write config.json + model.safetensors + README.md.")
    p.add_argument("checkpoint", help="official checkpoint (.pth)")
    p.add_argument("out_dir", help="folder to write; load it with facepcl.load(OUT_DIR)")
    p.add_argument("--name", default="pcl-vox-official", help="model name written to config.json")
    p.add_argument("--overwrite", action="store_true", help="replace a model already in OUT_DIR")
    p.add_argument("--load-timeout", type=float, default=None, metavar="SECONDS",
                   help="stop reading the checkpoint after this many seconds (default 120; an official one takes "
                        "about one)")
    p.add_argument("--load-memory", type=float, default=None, metavar="GIB",
                   help="memory the reading may use, in GiB (default 2 plus 8 times the file's size; Linux)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    refuse_url(args.checkpoint, "CHECKPOINT")
    refuse_url(args.out_dir, "OUT_DIR")
    from ..convert import LOAD_TIMEOUT, convert_checkpoint

    memory = None if args.load_memory is None else int(args.load_memory * 2**30)
    out = convert_checkpoint(args.checkpoint, args.out_dir, name=args.name, overwrite=args.overwrite,
                             load_timeout=args.load_timeout or LOAD_TIMEOUT, load_memory=memory)
    print(f"wrote {out} (config.json, model.safetensors, README.md); load it with facepcl.load({str(out)!r})")
    return 0
