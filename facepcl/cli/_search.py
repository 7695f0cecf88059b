"""``facepcl search INDEX QUERY... --by face|pose|trunk -k 10``: nearest faces of photos, export rows or vectors."""

from __future__ import annotations

import argparse
import json
import sys

from .._utils.paths import refuse_url

EPILOG = """\
QUERY is an image (every detected face is one query, embedded with the index's model unless --model is given),
an export folder (all its rows, or EXPORT#0,3 for rows 0 and 3 in input order), or a .npy file of vectors
(D,) or (Q, D) of the searched feature.
--by face finds the same person whatever the pose; --by pose the same head pose whoever it is.
example: facepcl search faces.index me.jpg --by face -k 5 --grid neighbours.png"""


def add_parser(sub) -> None:
    p = sub.add_parser("search", help="nearest faces in an index by face, pose or trunk code",
                       description="Find the k nearest faces of each query in an index built by `facepcl index`.",
                       epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("index", metavar="INDEX", help="index folder from `facepcl index`")
    p.add_argument("queries", nargs="+", metavar="QUERY", help="image, export folder (EXPORT#ROWS) or .npy file")
    p.add_argument("--by", choices=("face", "pose", "trunk"), default="face",
                   help="feature to compare: face (identity-like), pose, or trunk (default face)")
    p.add_argument("-k", type=int, default=10, help="neighbours per query (default 10)")
    p.add_argument("--group", choices=("track",), default=None,
                   help="track: return the k nearest video face tracks (each once, by its best frame) instead of "
                        "single faces")
    p.add_argument("--json", action="store_true", help="print JSON (one object per query) instead of a table")
    p.add_argument("--grid", metavar="PICTURE", default=None,
                   help="also draw each query with its neighbours into this .png/.jpg/.webp")
    p.add_argument("--nprobe", type=int, default=None, help="lists scanned per approximate query (IVF indexes)")
    p.add_argument("--model", default=None, help="model for image queries (default: the index's model)")
    p.add_argument("--device", default=None, help="torch device for image queries")
    p.add_argument("--det-threshold", dest="det_threshold", type=float, default=None,
                   help="detector score threshold for image queries (default: the model config's)")
    p.add_argument("--no-detect", dest="detect", action="store_false",
                   help="image queries are already aligned face crops: no detection")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    refuse_url(args.index, "INDEX")
    refuse_url(args.queries, "QUERY")
    refuse_url(args.grid, "--grid")
    from ..search import FaceIndex, resolve_queries

    index = FaceIndex.load(args.index, nprobe=args.nprobe)

    def make_embedder():
        from .._utils.digest import encoder_digest
        from ..pipeline import FaceEmbedder

        name = args.model or index.model_id
        detector = {"det_threshold": args.det_threshold} if args.det_threshold is not None else None
        emb = FaceEmbedder(name, device=args.device, detect=args.detect, detector=detector, return_crops=True)
        want, got = index.encoder_sha256, encoder_digest(emb.model)
        if got != want:
            raise ValueError(f"model {name!r} has encoder_sha256 {got}, but {args.index} was built from exports of "
                             f"{index.model_id!r} with encoder_sha256 {want}: their codes are not comparable; pass "
                             "--model with the exports' model, or search an index of this model's exports")
        want, got = index.identity.get("config_hash"), emb.info()["config_hash"]
        if want and got != want:
            raise ValueError(f"model {name!r} (config {got}) is not the one the index was built with (config "
                             f"{want}); pass --model with the exports' model")
        return emb

    queries, problems = resolve_queries(args.queries, args.by, index.dim, make_embedder, index.encoder_sha256)
    for p in problems:
        print(f"facepcl search: skipped: {p}", file=sys.stderr)
    if not queries:
        raise ValueError("no query to search with: " + ("; ".join(problems) or "no input gave a vector"))
    import numpy as np

    result = index.search(np.stack([q.vector for q in queries]), by=args.by, k=args.k, group=args.group)
    if args.json:
        for q, hits in zip(queries, result.records, strict=True):
            print(json.dumps({"query": q.label, "source": q.source, "by": args.by, "neighbours": hits}))
    else:
        for q, hits in zip(queries, result.records, strict=True):
            print(f"{q.label}  (by {args.by})")
            for h in hits:
                where = h["path"] if h["frame"] < 0 else f"{h['path']} frame {h['frame']}"
                track = "" if h.get("track_id") is None else f"  track {h['track_id']}"
                if "matches" in h:
                    track += f" ({h['matches']} matching frames)"
                print(f"  {h['rank']:>3}  {h['score']:.4f}  {where}  face {h['face_index']}  bbox {h['bbox']}{track}")
    if args.grid:
        from ..search import render_search_grid

        picture, missing = render_search_grid(index, queries, result)
        for p in missing:
            print(f"facepcl search: grid: {p}", file=sys.stderr)
        write_picture(picture, args.grid)
        print(f"facepcl search: grid -> {args.grid} ({picture.width}x{picture.height})", file=sys.stderr)
    return 0


def write_picture(picture, path: str) -> None:
    """Save the grid atomically (no half-written picture); one-line errors for unknown extensions and write failures.

    Raises:
        ValueError: The extension names no picture format.
        OutputError: The picture cannot be written there (folder missing or not writable, disk full).
    """
    import os

    from PIL import Image

    from .._utils.atomic import atomic_write
    from ..errors import OutputError

    ext = os.path.splitext(path)[1].lower()
    formats = Image.registered_extensions()
    if ext not in formats:
        raise ValueError(f"{path}: cannot write a search grid with extension {ext or '(none)'!r}; use .png, .jpg "
                         "or .webp")
    out = picture.convert("RGB") if formats[ext] in ("JPEG", "BMP") else picture
    try:
        atomic_write(path, lambda tmp: out.save(tmp, format=formats[ext]))
    except OSError as e:
        raise OutputError(f"{path}: cannot write the search grid ({e.strerror or e}); choose a writable place "
                          "with room for it") from None
