"""``facepcl swap A B -o grid.png``: decode the face of one image with the pose of the other, and back."""

from __future__ import annotations

import argparse

from .._utils.paths import refuse_url

EPILOG = """\
columns: aligned A, aligned B, then the decoder's reconstructions D(face A + pose A), D(face A + pose B),
D(face B + pose A), D(face B + pose B). With a trained model the middle two show each face in the other's pose.
rows: one per pair of faces, (A_i, B_j) for every chosen i and j; faces are numbered by detector score (0 = best).
needs a model with its decoder (the bundled pcl-demo, or a model exported by `facepcl train`).
example: facepcl swap examples/images/astronaut.jpg examples/images/grace_hopper.jpg -o grid.png"""


def _faces(value: str) -> list[int] | str:
    if value.strip() == "all":
        return "all"
    try:
        out = [int(v) for v in value.split(",") if v.strip()]
    except ValueError:
        out = []
    if not out or min(out) < 0:
        raise argparse.ArgumentTypeError(f"expected 'all' or comma-separated face indices such as 0 or 0,1; "
                                         f"got {value!r}")
    return out


def add_parser(sub) -> None:
    p = sub.add_parser("swap", help="grid of pose swaps: face of A with pose of B and back (decoder reconstructions)",
                       description="Detect and align the faces of two images, encode them, and decode every "
                                   "combination of their face and pose codes into one picture.",
                       epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("a", metavar="A", help="first image (any format facepcl reads)")
    p.add_argument("b", metavar="B", help="second image")
    p.add_argument("-o", "--output", required=True, metavar="GRID",
                   help="picture to write (.png, .jpg or .webp)")
    p.add_argument("--model", default=None,
                   help="model with a decoder: facepcl.load name, Hub id or folder (default: $FACEPCL_MODEL, "
                        "else pcl-demo)")
    p.add_argument("--revision", default=None, help="Hub branch, tag or commit to pin")
    p.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    p.add_argument("--faces-a", type=_faces, default=[0], metavar="I[,I...]|all",
                   help="which faces of A to use (default 0, the highest-scoring one)")
    p.add_argument("--faces-b", type=_faces, default=[0], metavar="J[,J...]|all", help="which faces of B (default 0)")
    p.add_argument("--no-detect", dest="detect", action="store_false",
                   help="the inputs are already aligned face crops: no detection")
    p.add_argument("--det-threshold", dest="det_threshold", type=float, default=None,
                   help="detector score threshold (default: the model config's)")
    p.add_argument("--scale", type=int, default=3, help="enlarge the 64 px tiles this many times (default 3)")
    p.add_argument("--resample", choices=("bicubic", "nearest"), default="bicubic",
                   help="how tiles are enlarged: bicubic (smooth, default) or nearest (the real pixels)")
    p.add_argument("--no-labels", dest="labels", action="store_false", help="no titles, tiles only")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    refuse_url([args.a, args.b], "image")
    refuse_url(args.output, "-o")
    from ..viz import load_decoder_model, swap_faces
    from ..viz._draw import save_image

    model = load_decoder_model(args.model, device=args.device, revision=args.revision)
    detector = {"det_threshold": args.det_threshold} if args.det_threshold is not None else {}
    swaps = swap_faces(args.a, args.b, model, faces_a=args.faces_a, faces_b=args.faces_b, detect=args.detect,
                       **detector)
    image = swaps.grid(scale=args.scale, resample=args.resample, labels=args.labels)
    save_image(image, args.output, "swap grid")
    rows = len(swaps)
    print(f"facepcl swap: {rows} pair{'s' * (rows != 1)} of faces -> {args.output} ({image.width}x{image.height}); "
          f"model {swaps.info.get('model_id')}")
    return 0
