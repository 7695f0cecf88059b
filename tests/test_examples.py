"""The example scripts run as documented (``python examples/X.py ARGS``) on small inputs and do what they say.

``examples/finetune_expression.py`` and the other protocol examples run in
``tests/test_eval_protocols.py``.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

import facepcl
from facepcl import PCLConfig, PCLModel
from facepcl.io import load_image
from facepcl.viz import swap_faces

from ._train_helpers import TINY  # the smallest useful training run, shared with the training tests

ROOT = Path(__file__).resolve().parents[1]
IMAGES = ROOT / "examples" / "images"


def run_example(name: str, *args: str, cwd: Path = ROOT) -> str:
    """Run ``python examples/NAME ARGS`` from the repository root; return its stdout (fails on exit != 0)."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.run([sys.executable, str(ROOT / "examples" / name), *args], cwd=cwd, capture_output=True,
                          text=True, env=env, timeout=600)
    assert proc.returncode == 0, f"{name} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


@pytest.fixture(scope="module")
def decoder_model_dir(tmp_path_factory) -> Path:
    torch.manual_seed(3)
    folder = tmp_path_factory.mktemp("model-with-decoder")
    PCLModel(PCLConfig(components=["encoder", "decoder"], name="random-decoder")).save_pretrained(str(folder))
    return folder


@pytest.mark.slow
def test_embed_folder_writes_every_face(tmp_path, random_model_dir):
    out = tmp_path / "faces.npz"
    printed = run_example("embed_folder.py", "examples/images", "-o", str(out), "--model", str(random_model_dir),
                          "--device", "cpu")
    assert "4 faces from 3 images" in printed
    data = np.load(out)
    assert list(data["path"]) == ["examples/images/astronaut.jpg", "examples/images/grace_hopper.jpg",
                                  "examples/images/pair.jpg", "examples/images/pair.jpg"]
    assert list(data["face_index"]) == [0, 0, 0, 1]
    ref = facepcl.embed([str(ROOT / "examples/images/pair.jpg")], model=facepcl.load(random_model_dir, device="cpu"))
    assert np.allclose(data["face"][2:], ref.face, atol=1e-5)
    assert np.allclose(data["pose"][2:], ref.pose, atol=1e-5)
    assert data["kps"].shape == (4, 5, 2)
    assert data["trunk"].shape == (4, 2048)


@pytest.mark.slow
def test_embed_folder_reports_bad_files_and_keeps_going(tmp_path, random_model_dir):
    folder = tmp_path / "pics"
    folder.mkdir()
    (folder / "broken.jpg").write_bytes(b"not a jpeg")
    Image.fromarray(np.full((80, 80, 3), 90, np.uint8)).save(folder / "wall.png")
    Image.open(IMAGES / "astronaut.jpg").save(folder / "astronaut.png")
    printed = run_example("embed_folder.py", str(folder), "-o", str(tmp_path / "f.npz"), "--model",
                          str(random_model_dir), "--device", "cpu")
    assert "skipped (unreadable)" in printed
    assert "broken.jpg" in printed
    assert re.search(r"skipped \(no face\): .*wall\.png", printed)
    assert "1 faces from 3 images" in printed


@pytest.mark.slow
def test_compare_faces_prints_cosine_similarities(random_model_dir):
    printed = run_example("compare_faces.py", "examples/images/astronaut.jpg", "examples/images/pair.jpg",
                          "--model", str(random_model_dir), "--device", "cpu")
    rows = dict(re.findall(r"^(A\d - B\d)\s+(-?[\d.]+\s+-?[\d.]+)$", printed, re.M))
    assert set(rows) == {"A0 - B0", "A0 - B1"}
    model = facepcl.load(random_model_dir, device="cpu")
    a = facepcl.embed(str(IMAGES / "astronaut.jpg"), model=model)
    b = facepcl.embed(str(IMAGES / "pair.jpg"), model=model)
    for j in range(2):
        for feature, shown in zip(("face", "pose"), rows[f"A0 - B{j}"].split(), strict=True):
            x, y = getattr(a, feature)[0], getattr(b, feature)[j]
            assert float(shown) == pytest.approx(x @ y / np.linalg.norm(x) / np.linalg.norm(y), abs=1e-3)


@pytest.mark.slow
def test_swap_poses_writes_the_grid(tmp_path, decoder_model_dir):
    out = tmp_path / "grid.png"
    printed = run_example("swap_poses.py", "examples/images/astronaut.jpg", "examples/images/pair.jpg",
                          "--faces-b", "all", "-o", str(out), "--model", str(decoder_model_dir), "--device", "cpu")
    assert "2 pair(s) of faces" in printed
    want = swap_faces(IMAGES / "astronaut.jpg", IMAGES / "pair.jpg", str(decoder_model_dir), faces_b="all",
                      device="cpu").grid(scale=3)
    got = np.asarray(Image.open(out).convert("RGB")).astype(int)
    assert got.shape == np.asarray(want).shape
    assert np.abs(got - np.asarray(want)).max() <= 1  # decoded in another process: float rounding at most


def _face_videos(folder: Path) -> Path:
    """Two short MJPEG videos of the public-domain portraits, panning slowly (real faces, real video files)."""
    folder.mkdir(parents=True)
    for name in ("astronaut", "grace_hopper"):
        image = load_image(IMAGES / f"{name}.jpg")
        writer = cv2.VideoWriter(str(folder / f"{name}.avi"), cv2.VideoWriter_fourcc(*"MJPG"), 10, (200, 240))
        assert writer.isOpened()
        for i in range(4):
            crop = cv2.resize(image[20:300, 20 + 4 * i:260 + 4 * i], (200, 240))
            writer.write(cv2.cvtColor(crop, cv2.COLOR_RGB2BGR))
        writer.release()
    (folder / "notes.txt").write_text("not a video; ignored")
    return folder


@pytest.mark.slow
def test_pretrain_videos_extracts_tracks_trains_and_exports(tmp_path):
    pytest.importorskip("yaml")  # the [train] extra
    videos = _face_videos(tmp_path / "videos")
    out = tmp_path / "run"
    overrides = [a for kv in TINY for a in ("--set", kv)]
    printed = run_example("pretrain_videos.py", str(videos), "-o", str(out), "--every", "2", "--steps", "1",
                          "--frame-size", "96", "--device", "cpu", *overrides)
    assert "astronaut/astronaut: 2 face frames" in printed
    assert "grace_hopper/grace_hopper: 2 face frames" in printed
    frames = sorted((out / "frames").rglob("*.png"))
    assert [f.relative_to(out / "frames").as_posix() for f in frames] == [
        "astronaut/astronaut/000000.png", "astronaut/astronaut/000002.png",
        "grace_hopper/grace_hopper/000000.png", "grace_hopper/grace_hopper/000002.png"]
    assert Image.open(frames[0]).size == (96, 96)
    model = facepcl.load(out / "model", components="all", device="cpu")
    assert model.config.components == ["encoder", "face_head", "pose_head", "decoder"]
    assert "components ['encoder', 'face_head', 'pose_head', 'decoder']" in printed
    assert (out / "checkpoints").is_dir()
    assert (out / "config.yaml").is_file()
