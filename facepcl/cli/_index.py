"""``facepcl index EXPORT... -o INDEX``: a searchable index over the face, pose and trunk vectors of exports."""

from __future__ import annotations

import argparse
import os

from .._utils.paths import refuse_url

EPILOG = """\
adding to an existing INDEX adds only rows it does not hold yet: run it again after `facepcl embed --resume`
or with a new export. All exports of one index must come from the same model and preprocessing.
search is exact below --exact-below rows and approximate (FAISS IVF, float16 vectors) from there on.
example: facepcl embed photos/ -o faces/ && facepcl index faces/ -o faces.index"""


def add_parser(sub) -> None:
    p = sub.add_parser("index", help="build or extend a vector index over the face/pose/trunk features of exports",
                       description="Index the face, pose and trunk vectors of `facepcl embed` output folders "
                                   "(Parquet, npz or safetensors), keeping each row's provenance.",
                       epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("exports", nargs="+", metavar="EXPORT", help="output folder of `facepcl embed`")
    p.add_argument("-o", "--output", required=True, metavar="INDEX", help="index folder (created or extended)")
    p.add_argument("--features", default=None, metavar="F[,F...]",
                   help="features to index: face, pose, trunk (default: all the first export holds)")
    p.add_argument("--exact-below", type=int, default=None, metavar="ROWS",
                   help="exact search below this many rows, approximate from it on (default 100000)")
    p.add_argument("--nprobe", type=int, default=None,
                   help="inverted lists scanned per approximate query (default: 1/8 of them, at least 16)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    refuse_url(args.exports, "EXPORT")
    refuse_url(args.output, "-o")
    from ..search import EXACT_BELOW, FaceIndex
    from ..search._index import INDEX_FILE

    existing = os.path.exists(os.path.join(args.output, INDEX_FILE))
    if existing:
        index = FaceIndex.load(args.output, nprobe=args.nprobe)
        if args.features is not None and sorted(args.features.split(",")) != sorted(index.features):
            raise ValueError(f"{args.output} indexes {index.features}, not {args.features}; drop --features to "
                             "extend it, or write a new index with -o")
        if args.exact_below is not None:
            index.exact_below = args.exact_below
    else:
        features = None if args.features is None else [f.strip() for f in args.features.split(",") if f.strip()]
        index = FaceIndex(features, exact_below=args.exact_below or EXACT_BELOW, nprobe=args.nprobe)
    total = 0
    for export in args.exports:
        added = index.add(export)
        total += added
        print(f"facepcl index: {export}: {added} new row{'s' * (added != 1)}")
    index.save(args.output)
    kinds = ", ".join(f"{f} {k}" for f, k in index.kinds().items())
    print(f"facepcl index: {args.output}: {len(index)} faces from {len(index.exports)} export(s) "
          f"(+{total}); search: {kinds}")
    return 0
