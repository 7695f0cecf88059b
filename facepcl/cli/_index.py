"""``facepcl index EXPORT... -o INDEX``: a searchable index over the face, pose and trunk vectors of exports."""

from __future__ import annotations

import argparse
import contextlib
import os

from .._utils.paths import refuse_url

EPILOG = """\
adding to an existing INDEX adds only rows it does not hold yet: run it again after `facepcl embed --resume`
or with a new export; an export written again (`facepcl embed --overwrite`) has its rows replaced.
All exports of one index must come from the same encoder (encoder_sha256) and preprocessing.
--rebuild builds INDEX again from the exports it lists (and any EXPORT given): the fix for a damaged index.
search is exact below --exact-below rows and approximate (FAISS IVF, float16 vectors) from there on.
one `facepcl index` at a time writes an INDEX; a second one is refused.
example: facepcl embed photos/ -o faces/ && facepcl index faces/ -o faces.index"""


def add_parser(sub) -> None:
    p = sub.add_parser("index", help="build or extend a vector index over the face/pose/trunk features of exports",
                       description="Index the face, pose and trunk vectors of `facepcl embed` output folders "
                                   "(Parquet, npz or safetensors), keeping each row's provenance.",
                       epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("exports", nargs="*", metavar="EXPORT", help="output folder of `facepcl embed`")
    p.add_argument("-o", "--output", required=True, metavar="INDEX", help="index folder (created or extended)")
    p.add_argument("--rebuild", action="store_true",
                   help="build INDEX anew from the exports it lists (and any EXPORT given), e.g. after damage")
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
    from .._utils.folders import FolderLock
    from ..search._exports import list_shards
    from ..search._files import write_error
    from ..search._query import is_export

    if not args.exports and not args.rebuild:
        raise ValueError("name at least one EXPORT (an output folder of `facepcl embed`), or pass --rebuild to "
                         f"build {args.output} again from the exports it lists")
    if is_export(args.output) or (os.path.isdir(args.output) and list_shards(args.output)):
        raise ValueError(f"{args.output} is an export folder of `facepcl embed`; write the index to its own folder "
                         "with -o")
    created = not os.path.exists(args.output)
    try:
        lock = FolderLock(args.output, "index").acquire()
    except OSError as e:  # recording the owner in the lock file failed (a full disk)
        raise write_error(e, args.output) from None
    try:
        return _update(args)
    except BaseException:
        lock.release()
        if created:  # leave no empty folder behind a failed first run
            with contextlib.suppress(OSError):
                os.unlink(lock.path)
                os.rmdir(args.output)
        raise
    finally:
        lock.release()


def _update(args: argparse.Namespace) -> int:
    """The read-modify-write of the index, under its lock."""
    from ..search import EXACT_BELOW, FaceIndex
    from ..search._files import INDEX_FILE, IndexFileError, named, read_settings, sweep

    exports = list(args.exports)
    features = None if args.features is None else [f.strip() for f in args.features.split(",") if f.strip()]
    if args.rebuild:
        try:
            old = read_settings(args.output)
        except (FileNotFoundError, IndexFileError):
            if not exports:
                raise
            old = {}  # unreadable or absent: the EXPORTs given are the whole index
        listed = [e["export"] for e in old.get("exports", []) if isinstance(e, dict) and "export" in e]
        exports = list(dict.fromkeys(listed + [os.path.abspath(e) for e in exports]))
        index = FaceIndex(features or old.get("features"), exact_below=args.exact_below or old.get("exact_below")
                          or EXACT_BELOW, nprobe=args.nprobe if args.nprobe is not None else old.get("nprobe"))
    elif os.path.exists(os.path.join(args.output, INDEX_FILE)):
        index = FaceIndex.load(args.output, nprobe=args.nprobe)
        if features is not None and sorted(features) != sorted(index.features):
            raise ValueError(f"{args.output} indexes {index.features}, not {args.features}; drop --features to "
                             "extend it, write a new index with -o, or pass --rebuild to change them")
        if args.exact_below is not None:
            index.exact_below = args.exact_below
    else:
        index = FaceIndex(features, exact_below=args.exact_below or EXACT_BELOW, nprobe=args.nprobe)
    state = None
    if not args.rebuild and os.path.exists(os.path.join(args.output, INDEX_FILE)):
        state = _state(read_settings(args.output))
    total = 0
    for export in exports:
        before = len(index)
        try:
            added = index.add(export)
        except OSError as e:
            if isinstance(e, FileNotFoundError):
                raise
            raise ValueError(f"{export}: cannot read this export ({e.strerror or e}); check that it is readable, "
                             "or leave it out") from None
        total += added
        replaced = before + added - len(index)
        note = f" (the export was written again: its {replaced} earlier rows were replaced)" if replaced else ""
        print(f"facepcl index: {export}: {added} new row{'s' * (added != 1)}{note}")
    if _state(vars(index)) == state:  # nothing to write; only what an interrupted run left is deleted
        sweep(args.output, named(read_settings(args.output)))
    else:
        index.save(args.output, locked=True)
    kinds = ", ".join(f"{f} {k}" for f, k in index.kinds().items())
    print(f"facepcl index: {args.output}: {len(index)} faces from {len(index.exports)} export(s) "
          f"(+{total}); search: {kinds}")
    return 0


def _state(settings: dict) -> str:
    """What a save would record: exports (rows, shards) and settings, from ``index.json`` or a ``FaceIndex``."""
    import json

    return json.dumps([settings.get(k) for k in ("exports", "exact_below", "nprobe", "features")], sort_keys=True,
                      default=str)
