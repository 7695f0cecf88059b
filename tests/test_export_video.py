"""Video frames for `facepcl embed`: every Nth frame, indices, timestamps, colour order, broken files."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from facepcl.io.video import VideoReadError, iter_frames
from tests import _samples

FPS = 12.0
# BGR colours as OpenCV writes them: blue, green, red, repeated
BGR = [(255, 0, 0), (0, 255, 0), (0, 0, 255)]


@pytest.fixture(scope="module")
def synthetic_video(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("video") / "colours.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), FPS, (48, 32))
    assert writer.isOpened()
    for i in range(20):
        writer.write(np.full((32, 48, 3), BGR[i % 3], np.uint8))
    writer.release()
    return path


def test_every_nth_frame_with_index_timestamp_and_rgb(synthetic_video) -> None:
    frames = list(iter_frames(str(synthetic_video), every=3))
    assert [f.index for f in frames] == [0, 3, 6, 9, 12, 15, 18]
    np.testing.assert_allclose([f.timestamp for f in frames], [f.index / FPS for f in frames], atol=1e-6)
    for f in frames:
        assert f.error is None
        assert f.image.shape == (32, 48, 3)
        assert f.image.dtype == np.uint8
        # frame i was written as BGR colour i % 3; in RGB the bright channel is mirrored
        bright = int(np.argmax(f.image.reshape(-1, 3).mean(0)))
        assert bright == 2 - int(np.argmax(BGR[f.index % 3]))


def test_resume_after_a_frame(synthetic_video) -> None:
    assert [f.index for f in iter_frames(str(synthetic_video), every=3, after=9)] == [12, 15, 18]
    assert [f.index for f in iter_frames(str(synthetic_video), every=1, after=17)] == [18, 19]


@pytest.mark.photos
def test_real_video() -> None:
    path = _samples.pyfeat("single_face.mp4")
    frames = list(iter_frames(str(path), every=10))
    assert [f.index for f in frames] == list(range(0, 72, 10))
    np.testing.assert_allclose([f.timestamp for f in frames], [i / 30.0 for i in range(0, 72, 10)], atol=1e-6)
    assert all(f.image.shape == (360, 640, 3) for f in frames)


def test_broken_videos(tmp_path: Path, synthetic_video) -> None:
    text = tmp_path / "notes.mp4"
    text.write_text("this is not a video\n" * 50)
    empty = tmp_path / "empty.mov"
    empty.write_bytes(b"")
    truncated = tmp_path / "truncated.avi"
    truncated.write_bytes(synthetic_video.read_bytes()[:200])
    for path in (text, empty, truncated):
        with pytest.raises(VideoReadError, match=str(path.name)):
            list(iter_frames(str(path)))
    with pytest.raises(VideoReadError, match="no such file"):
        list(iter_frames(str(tmp_path / "missing.mp4")))
    with pytest.raises(ValueError, match="every"):
        list(iter_frames(str(synthetic_video), every=0))
