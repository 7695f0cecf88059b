"""Frames of a video file, every Nth, with frame index and timestamp (OpenCV's FFmpeg reader).

OpenCV comes with facexlib, so reading video adds no dependency. Frames are
read in order with ``grab`` (no colour conversion for frames that are not
kept) and ``retrieve`` for kept ones, which gives exact frame indices where
seeking by frame number would not (FFmpeg seeks to key frames).
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from ..errors import ImageLoadError
from .images import check_regular_file, load_image


class VideoReadError(ImageLoadError):
    """A video cannot be opened, or no frame of it can be decoded."""


class VideoTruncatedError(VideoReadError):
    """A video ended (or stopped decoding) before the frame count its container declares.

    Raised by :func:`iter_frames` after every frame it could read was
    yielded: those frames are good, and the message says where it stopped.

    Attributes:
        frames: Frames read (the last good one is ``frames - 1``).
        declared: Frames the container declares.
    """

    def __init__(self, message: str, frames: int, declared: int) -> None:
        super().__init__(message)
        self.frames = frames
        self.declared = declared


def _short(read: int, declared: float) -> bool:
    """Whether ``read`` frames fall short of a declared count (containers that estimate it may be 1% off)."""
    if not math.isfinite(declared) or declared <= 0:
        return False
    return declared - read > max(1, round(0.01 * declared))


@dataclass
class Frame:
    """One kept frame, or the failure to decode it.

    Attributes:
        index: 0-based frame number in the video.
        timestamp: Presentation time in seconds (see :func:`iter_frames`).
        image: ``(H, W, 3)`` uint8 RGB, or None when ``error`` is set.
        error: Why this frame could not be decoded.
    """

    index: int
    timestamp: float
    image: np.ndarray | None = None
    error: Exception | None = None


def _folder_frames(folder: str, every: int, after: int) -> Iterator[Frame]:
    """The images of a folder, sorted by name, as frames ``0, 1, ...`` (no timestamps); unreadable ones as errors."""
    from .inputs import IMAGE_EXTENSIONS

    names = sorted(n for n in os.listdir(folder)
                   if not n.startswith(".") and os.path.splitext(n)[1].lower() in IMAGE_EXTENSIONS
                   and os.path.isfile(os.path.join(folder, n)))
    if not names:
        raise VideoReadError(f"{folder}: a folder without image files is no sequence of frames")
    for index in range(0, len(names), every):
        if index <= after:
            continue
        try:
            yield Frame(index, math.nan, load_image(os.path.join(folder, names[index])))
        except ImageLoadError as e:
            yield Frame(index, math.nan, error=e)


def iter_frames(path: str, every: int = 1, after: int = -1) -> Iterator[Frame]:
    """Yield frames ``0, every, 2*every, ...`` of a video, or of a folder of frame images.

    The timestamp is the frame's presentation time from the container
    (``CAP_PROP_POS_MSEC`` / 1000), which stays right for variable frame rate
    video; where the container gives none it is ``index / fps``, and NaN when
    the frame rate is unknown too.

    A folder's image files, sorted by name, are its frames (no timestamps:
    NaN); an unreadable image is a frame with an ``error``.

    Args:
        path: Video file, or folder of frame images.
        every: Keep every ``every``-th frame (1 keeps all).
        after: Skip frames with index ``<= after`` (resuming a video part way).

    Raises:
        VideoReadError: The file does not exist, cannot be opened as a video,
            or ends before its first frame could be decoded. Raised when the
            generator is first advanced.
        VideoTruncatedError: After the last frame that could be read, when
            the video ends before the frame count its container declares (a
            file cut short, or damaged so that decoding stops).
    """
    import cv2

    if every < 1:
        raise ValueError(f"every must be >= 1, got {every}")
    if not os.path.exists(path):
        raise VideoReadError(f"{path}: no such file; check the path")
    if os.path.isdir(path):
        yield from _folder_frames(path, every, after)
        return
    try:
        check_regular_file(path)  # a device or FIFO would make the decoder read forever or hang
    except ImageLoadError as e:
        raise VideoReadError(str(e)) from None
    cap = cv2.VideoCapture(path)
    try:
        if not cap.isOpened():
            raise VideoReadError(f"{path}: cannot be opened as a video (OpenCV {cv2.__version__} with FFmpeg); the "
                                 "file is corrupt, empty, or not a video. Re-encode it (e.g. with ffmpeg) or remove it")
        fps = cap.get(cv2.CAP_PROP_FPS)
        index = 0
        while cap.grab():
            if index > after and index % every == 0:
                ms = cap.get(cv2.CAP_PROP_POS_MSEC)
                timestamp = _timestamp(index, ms, fps)
                ok, bgr = cap.retrieve()
                if not ok or bgr is None:
                    yield Frame(index, timestamp, error=VideoReadError(
                        f"{path}: frame {index} could not be decoded; the video is damaged at {timestamp:.3f} s"))
                else:
                    try:
                        image = load_image(bgr, color_order="BGR", name=f"{path} frame {index}")
                    except ImageLoadError as e:
                        yield Frame(index, timestamp, error=e)
                    else:
                        yield Frame(index, timestamp, image)
            index += 1
        if index == 0:
            raise VideoReadError(f"{path}: no frame could be decoded (the video is empty or damaged); re-encode it "
                                 "or remove it")
        declared = cap.get(cv2.CAP_PROP_FRAME_COUNT)
        if _short(index, declared):
            raise VideoTruncatedError(
                f"{path}: truncated after frame {index - 1}: decoding stopped there, but the container declares "
                f"{int(declared)} frames (the file was cut short or is damaged); the frames before were kept. "
                "Restore or re-encode the file, then embed it again", index, int(declared))
    finally:
        cap.release()


def _timestamp(index: int, ms: float, fps: float) -> float:
    if math.isfinite(ms) and (ms > 0 or index == 0):
        return ms / 1000.0
    if math.isfinite(fps) and fps > 0:
        return index / fps
    return math.nan
