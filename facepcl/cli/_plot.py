"""``facepcl plot OUT -o map.png``: a 2-D map of an export's face, pose or trunk embeddings."""

from __future__ import annotations

import argparse
import sys

from .._utils.paths import refuse_url

EPILOG = """\
EMBEDDINGS is the OUT folder of `facepcl embed` (any --format) or one of its .parquet files.
colour columns: path, item, frame, timestamp, face_index, width, height, det_score, dirname (the folder holding
each file), file (its name), and every column of --labels (a CSV with a header and a 'path' column).
methods: pca always; tsne with scikit-learn, umap with umap-learn (auto: tsne, else umap, else pca; pca below
10 faces). Rendering: matplotlib if installed (pip install "facepcl[plot]"; adds .svg/.pdf), else Pillow.
examples:
  facepcl embed photos/ -o faces/ && facepcl plot faces/ -o map.png --color-by dirname
  facepcl plot faces/ -o pose.png --features pose --labels labels.csv --color-by view"""


def _size(value: str) -> tuple[int, int]:
    try:
        w, h = (int(v) for v in value.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected WIDTHxHEIGHT in pixels such as 1600x1200, got {value!r}") from None
    return w, h


def add_parser(sub) -> None:
    p = sub.add_parser("plot", help="2-D map (PCA, t-SNE, UMAP) of exported embeddings, with face thumbnails",
                       description="Project the face, pose or trunk embeddings of a `facepcl embed` export to 2-D "
                                   "and draw them coloured by any column or label, with face thumbnails re-cropped "
                                   "from the source files.",
                       epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("embeddings", metavar="EMBEDDINGS", help="facepcl embed output folder, or one .parquet shard")
    p.add_argument("-o", "--output", required=True, metavar="MAP", help="picture to write (.png, .jpg, .webp; "
                                                                        ".svg, .pdf with matplotlib)")
    p.add_argument("--features", choices=("face", "pose", "trunk"), default="face",
                   help="which embedding to map (default face)")
    p.add_argument("--color-by", "--colour-by", dest="color_by", default=None, metavar="COLUMN",
                   help="column to colour by (default: the first --labels column, else dirname when the files lie "
                        "in several folders, else path)")
    p.add_argument("--labels", default=None, metavar="CSV", help="CSV with a 'path' column and label columns")
    p.add_argument("--method", choices=("auto", "pca", "tsne", "umap"), default="auto",
                   help="projection (default auto)")
    p.add_argument("--no-thumbnails", dest="thumbnails", action="store_false",
                   help="dots only (default: face thumbnails where the source files are readable)")
    p.add_argument("--max-thumbnails", type=int, default=150, help="at most this many thumbnails (default 150)")
    p.add_argument("--thumb-size", type=int, default=48, help="thumbnail side in pixels (default 48)")
    p.add_argument("--size", type=_size, default=(1600, 1200), metavar="WxH", help="picture size (default 1600x1200)")
    p.add_argument("--renderer", choices=("auto", "matplotlib", "pil"), default="auto",
                   help="auto (matplotlib if installed, else pil), matplotlib or pil")
    p.add_argument("--max-points", type=int, default=10000,
                   help="plot a random sample of at most this many faces (default 10000; 0: all)")
    p.add_argument("--seed", type=int, default=0, help="seed for sampling, projection and thumbnails (default 0)")
    p.add_argument("--no-normalize", dest="normalize", action="store_false",
                   help="project the raw embeddings (default: L2-normalised, i.e. cosine geometry)")
    p.add_argument("--perplexity", type=float, default=None, help="t-SNE perplexity (default min(30, (N-1)/3))")
    p.add_argument("--neighbors", dest="n_neighbors", type=int, default=None, help="UMAP neighbours (default 15)")
    p.add_argument("--tracks", action="store_true",
                   help="EMBEDDINGS is a video or a folder of frames: follow its faces (facepcl.track) and draw, "
                        "for each track, thumbnails over time and its head angles and first pose component")
    p.add_argument("--every", type=int, default=1, metavar="N", help="--tracks: use every N-th frame (default 1)")
    p.add_argument("--model", default=None, help="--tracks: model (default: $FACEPCL_MODEL, else pcl-demo)")
    p.add_argument("--save-coords", default=None, metavar="CSV",
                   help="also write item,path,frame,face_index,x,y,<colour column> per face")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    refuse_url(args.embeddings, "EMBEDDINGS")
    refuse_url(args.output, "-o")
    refuse_url(args.labels, "--labels")
    refuse_url(args.save_coords, "--save-coords")
    if args.tracks:
        return _tracks(args)
    from ..viz import plot_embeddings

    try:
        emap, lay = _plot(plot_embeddings, args)
    except ImportError as e:  # an optional package that was asked for is missing
        print(f"facepcl plot: error: {e}", file=sys.stderr)
        return 1
    if args.save_coords:
        emap.save_coords(args.save_coords)
    for note in emap.notes:
        print(f"facepcl plot: {note}", file=sys.stderr)
    for problem in lay.problems[:5]:
        print(f"facepcl plot: no thumbnail: {problem}", file=sys.stderr)
    if len(lay.problems) > 5:
        print(f"facepcl plot: ... and {len(lay.problems) - 5} more sources without thumbnails", file=sys.stderr)
    col = emap.colouring
    groups = f"{len(col.legend)} groups" if col.kind == "categorical" else f"{col.limits[0]:.4g} to {col.limits[1]:.4g}"
    print(f"facepcl plot: {len(emap)} faces, {emap.features} features, {emap.projection.method}, coloured by "
          f"{col.name} ({groups}), {len(lay.thumbnails)} thumbnails -> {args.output}")
    return 0


def _plot(plot_embeddings, args: argparse.Namespace):
    return plot_embeddings(
        args.embeddings, args.output, features=args.features, color_by=args.color_by, labels=args.labels,
        method=args.method, thumbnails=args.thumbnails, max_thumbnails=args.max_thumbnails,
        thumb_size=args.thumb_size, size=args.size, renderer=args.renderer, seed=args.seed,
        normalize=args.normalize, max_points=args.max_points or None, perplexity=args.perplexity,
        n_neighbors=args.n_neighbors)


def _tracks(args: argparse.Namespace) -> int:
    from ..tracking import track
    from ..viz import track_strips

    tracks = track(args.embeddings, every=args.every, model=args.model)
    if not tracks:
        print(f"facepcl plot: error: {args.embeddings}: no face was found in any frame", file=sys.stderr)
        return 1
    track_strips(tracks, args.output, thumb_size=args.thumb_size)
    print(f"facepcl plot: {len(tracks)} tracks, {sum(len(t) for t in tracks)} faces -> {args.output}")
    return 0
