"""Video frames for `facepcl embed`: every Nth frame, indices, timestamps, colour order, broken files."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from facepcl.io.video import VideoReadError, VideoTruncatedError, iter_frames
from tests import _samples
from tests._video import remux_avi

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


@pytest.mark.photos
def test_a_real_video_cut_short_yields_its_frames_then_says_where_it_stopped(tmp_path: Path) -> None:
    whole = tmp_path / "whole.avi"
    assert remux_avi(_samples.pyfeat("single_face.mp4"), whole) == 72
    cut = tmp_path / "cut.avi"
    data = whole.read_bytes()
    cut.write_bytes(data[: len(data) // 2])  # a byte cut: a download or copy that stopped half way
    frames = []
    with pytest.raises(VideoTruncatedError, match=r"cut.avi: truncated after frame (\d+).* declares 72 frames") as e:
        for f in iter_frames(str(cut), every=5):
            frames.append(f)
    assert 20 < e.value.frames < 60
    assert e.value.declared == 72
    assert [f.index for f in frames] == list(range(0, e.value.frames, 5))
    assert all(f.error is None for f in frames)
    assert [f.index for f in iter_frames(str(whole), every=5)] == list(range(0, 72, 5))  # whole: no error
    # the mp4 itself cut short loses its index (moov at the end): it cannot be opened at all, a recorded error
    mp4 = tmp_path / "cut.mp4"
    mp4.write_bytes(_samples.pyfeat("single_face.mp4").read_bytes()[:100_000])
    with pytest.raises(VideoReadError, match="cannot be opened"):
        list(iter_frames(str(mp4)))
