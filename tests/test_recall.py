"""Recall of the default pipeline: every face the bundled detector finds at full resolution, and nothing more.

The default detector works on images shrunk to 640 px and looks again, at
higher resolution, around candidates that scored just under the threshold
there. The reference is the same detector run on each image at its full
resolution, one pass. Images: every real photo and sampled video frame the
tests fetch, plus grayscale, large-face and small-face versions of them.
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from facepcl.detection import Detections, FaceDetector
from facepcl.io import load_image
from facepcl.pipeline import FaceEmbedder
from tests import _samples

PHOTOS = ("single_face.jpg", "multi_face.jpg", "BWPictureHuman.jpg", "Image_with_alpha.png", "0-f1-su-ph.jpg",
          "0-f15-hao-ph.jpg", "15-f13-anc-ph.jpg", "45-m7-di-ph.jpg", "free-mountain-vector-01.jpg")
VIDEOS = ("WolfgangLanger_Pexels.mp4", "single_face.mp4", "face_noface.mov", "no_face.mp4")


def _frames(name: str, count: int = 3) -> dict[str, np.ndarray]:
    cap = cv2.VideoCapture(str(_samples.pyfeat(name)))
    total = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
    out = {}
    for k in np.linspace(0, total - 1, count).astype(int):
        cap.set(cv2.CAP_PROP_POS_FRAMES, int(k))
        ok, frame = cap.read()
        if ok:
            out[f"{name}@{k}"] = np.ascontiguousarray(frame[..., ::-1])
    cap.release()
    assert out, f"could not read frames of {name}"
    return out


def _gray(image: np.ndarray, scale: float) -> np.ndarray:
    g = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
    g = cv2.resize(g, None, fx=scale, fy=scale, interpolation=cv2.INTER_CUBIC)
    return np.repeat(g[..., None], 3, axis=2)


def _small_faces(image: np.ndarray, factor: int) -> np.ndarray:
    """``image`` in the corner of a grey canvas ``factor`` times its size: its faces become small at 640 px."""
    canvas = np.full((image.shape[0] * factor, image.shape[1] * factor, 3), 128, np.uint8)
    canvas[:image.shape[0], :image.shape[1]] = image
    return canvas


@pytest.fixture(scope="module")
def images() -> dict[str, np.ndarray]:
    out = {n: load_image(_samples.pyfeat(n)) for n in PHOTOS}
    out["astronaut.png"] = load_image(_samples.astronaut())
    out["grace_hopper.jpg"] = load_image(_samples.grace_hopper())
    for name in VIDEOS:
        out.update(_frames(name))
    for name in ("0-f1-su-ph.jpg", "grace_hopper.jpg", "multi_face.jpg"):  # grayscale, large faces
        out[f"{name} gray x2"] = _gray(out[name], 2.0)
    out["multi_face.jpg small x5"] = _small_faces(out["multi_face.jpg"], 5)  # faces of 16-22 px at 640
    return out


def _matches(found: Detections, wanted: Detections) -> tuple[int, int]:
    """(wanted faces found, found faces that match none): a face matches when its box centre lies in the other's box."""
    def inside(a: Detections, b: Detections) -> np.ndarray:
        c = a.boxes.reshape(-1, 2, 2).mean(1)
        return ((c[:, None, 0] >= b.boxes[None, :, 0]) & (c[:, None, 0] <= b.boxes[None, :, 2])
                & (c[:, None, 1] >= b.boxes[None, :, 1]) & (c[:, None, 1] <= b.boxes[None, :, 3]))

    hit = inside(wanted, found) | inside(found, wanted).T  # (wanted, found)
    return int(hit.any(1).sum()), int((~hit.any(0)).sum())


@pytest.mark.photos
@pytest.mark.slow
def test_default_finds_every_face_full_resolution_finds(random_pcl_model, images):
    default = FaceEmbedder(random_pcl_model, device="cpu").detector
    one_pass = FaceDetector(device="cpu", mode="fast", rescue_threshold=None)
    rescued_images = 0
    for name, image in images.items():
        full = FaceDetector(device="cpu", mode="fast", max_size=max(image.shape[:2]), rescue_threshold=None)
        want = full.detect(image)
        got = default.detect(image)
        found, extra = _matches(got, want)
        assert (found, extra) == (len(want), 0), (name, len(want), found, extra)
        rescued_images += _matches(one_pass.detect(image), want)[0] < len(want)
        if name.startswith(("free-mountain", "no_face")):
            assert len(got) == 0, name
    # the second pass is what finds them: shrunk to 640 px in one pass, the small faces are missed
    assert rescued_images >= 1
