"""Recall of the default detector against the same detector at full resolution, per photo, and what it costs.

For every real photo and sampled video frame the tests fetch, plus
grayscale large-face and small-face versions of some, the bundled RetinaFace
is run (a) at each image's full resolution, one pass (the reference), (b) as
the pipeline runs it by default (shrunk to 640 px, then a second pass around
candidates scoring 0.2-0.8), and (c) at 640 px in one pass (before the
second pass existed). Reported per image: faces at full resolution, found,
missed and extra faces of (b) and (c), whether the second pass ran, and the
time of (b) and (c) (fast float32 detector, median of 3 calls).

Usage::

    python benchmarks/recall.py
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any

import _bench
import cv2
import numpy as np

PHOTOS = ("single_face.jpg", "multi_face.jpg", "BWPictureHuman.jpg", "Image_with_alpha.png", "0-f1-su-ph.jpg",
          "0-f15-hao-ph.jpg", "15-f13-anc-ph.jpg", "45-m7-di-ph.jpg", "free-mountain-vector-01.jpg")
VIDEOS = ("WolfgangLanger_Pexels.mp4", "single_face.mp4", "face_noface.mov", "no_face.mp4")


def images() -> dict[str, np.ndarray]:
    """The photos, 3 frames of each video, and grayscale x2 / small-face versions."""
    from facepcl.io import load_image
    from tests import _samples

    out = {n: load_image(_samples.pyfeat(n)) for n in PHOTOS}
    out["astronaut.png"] = load_image(_samples.astronaut())
    out["grace_hopper.jpg"] = load_image(_samples.grace_hopper())
    for name in VIDEOS:
        cap = cv2.VideoCapture(str(_samples.pyfeat(name)))
        total = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
        for k in np.linspace(0, total - 1, 3).astype(int):
            cap.set(cv2.CAP_PROP_POS_FRAMES, int(k))
            ok, frame = cap.read()
            if ok:
                out[f"{name} frame {k}"] = np.ascontiguousarray(frame[..., ::-1])
        cap.release()
    for name in ("0-f1-su-ph.jpg", "grace_hopper.jpg", "multi_face.jpg"):
        g = cv2.resize(cv2.cvtColor(out[name], cv2.COLOR_RGB2GRAY), None, fx=2.0, fy=2.0,
                       interpolation=cv2.INTER_CUBIC)
        out[f"{name} gray x2"] = np.repeat(g[..., None], 3, axis=2)
    for k in (4, 5):
        mf = out["multi_face.jpg"]
        canvas = np.full((mf.shape[0] * k, mf.shape[1] * k, 3), 128, np.uint8)
        canvas[:mf.shape[0], :mf.shape[1]] = mf
        out[f"multi_face.jpg small x{k}"] = canvas
    return out


def _match(found, wanted) -> tuple[int, int]:
    def inside(a, b) -> np.ndarray:
        c = a.boxes.reshape(-1, 2, 2).mean(1)
        return ((c[:, None, 0] >= b.boxes[None, :, 0]) & (c[:, None, 0] <= b.boxes[None, :, 2])
                & (c[:, None, 1] >= b.boxes[None, :, 1]) & (c[:, None, 1] <= b.boxes[None, :, 3]))

    hit = inside(wanted, found) | inside(found, wanted).T
    return int(hit.any(1).sum()), int((~hit.any(0)).sum())


def _seconds(fn, calls: int = 3) -> float:
    out = []
    for _ in range(calls):
        start = time.perf_counter()
        fn()
        out.append(time.perf_counter() - start)
    return statistics.median(out)


def run() -> dict[str, Any]:
    from facepcl.detection import FaceDetector

    default = FaceDetector(device="cpu", mode="fast")
    one_pass = FaceDetector(device="cpu", mode="fast", rescue_threshold=None)
    rows = []
    for name, image in images().items():
        _bench.say(f"recall: {name}")
        full = FaceDetector(device="cpu", mode="fast", max_size=max(image.shape[:2]), rescue_threshold=None)
        want = full.detect(image)
        got, single = default.detect(image), one_pass.detect(image)
        weak = default._detect([default.prepare(image)])[0]  # every candidate of the first pass
        second = bool(max(image.shape[:2]) > default.max_size
                      and ((weak.scores > default.rescue_threshold) & (weak.scores <= default.det_threshold)).any())
        f, e = _match(got, want)
        f1, e1 = _match(single, want)
        rows.append({"image": name, "size": f"{image.shape[1]}x{image.shape[0]}", "full_res": len(want),
                     "found": f, "missed": len(want) - f, "extra": e, "one_pass_found": f1,
                     "one_pass_missed": len(want) - f1, "one_pass_extra": e1, "second_pass": second,
                     "ms": 1e3 * _seconds(lambda image=image: default.detect(image)),
                     "one_pass_ms": 1e3 * _seconds(lambda image=image: one_pass.detect(image))})
    return {"rows": rows}


def markdown(result: dict[str, Any]) -> str:
    rows = [[r["image"], r["size"], r["full_res"], r["found"], r["missed"], r["extra"],
             "yes" if r["second_pass"] else "", f"{r['one_pass_found']}/{r['one_pass_missed']}/{r['one_pass_extra']}",
             f"{r['ms']:.0f}", f"{r['one_pass_ms']:.0f}"] for r in result["rows"]]
    total = {k: sum(r[k] for r in result["rows"]) for k in ("full_res", "found", "missed", "extra", "one_pass_missed")}
    return _bench.table(["image", "size", "faces at full res", "found", "missed", "extra", "second pass",
                         "640 px one pass found/missed/extra", "ms", "one pass ms"], rows) + (
        f"\n\nIn all: {total['full_res']} faces at full resolution; the default found {total['found']}, missed "
        f"{total['missed']}, added {total['extra']}; one pass at 640 px missed {total['one_pass_missed']}.")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    _bench.add_common_args(p)
    a = p.parse_args()
    result = run()
    return _bench.finish(markdown(result), result, a.json)


if __name__ == "__main__":
    raise SystemExit(main())
