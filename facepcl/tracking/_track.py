"""``facepcl.track``: every face of a video (or a sequence of frames) as tracks, without writing files."""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..io.video import VideoTruncatedError, iter_frames
from ._summary import box_sharpness, summarize
from ._tracker import TrackerOptions, VideoTracker
from .angles import head_angles


@dataclass
class Track:
    """One face followed through a video.

    Attributes:
        track_id: Its id (unique among the tracks of one call or export).
        source: The video file or frame folder.
        frame: ``(N,)`` int64 frame numbers, ascending.
        timestamp: ``(N,)`` float64 seconds (NaN for frames without a time).
        bbox: ``(N, 4)`` float32 boxes in pixels.
        kps: ``(N, 5, 2)`` float32 landmarks.
        det_score: ``(N,)`` float32 detector scores.
        face: ``(N, D)`` float32 face codes (F_f).
        pose: ``(N, D)`` float32 pose codes (F_p).
        trunk: ``(N, D)`` float32 trunk features (F).
        angles: ``(N, 3)`` float32 approximate yaw, pitch, roll in degrees (:func:`head_angles`).
        sharpness: ``(N,)`` float32 variance of the Laplacian of each face's box region at 64 px.
        summary: The track's summary row (:func:`facepcl.tracking.summarize`).
    """

    track_id: int
    source: str
    frame: np.ndarray
    timestamp: np.ndarray
    bbox: np.ndarray
    kps: np.ndarray
    det_score: np.ndarray
    face: np.ndarray
    pose: np.ndarray
    trunk: np.ndarray
    angles: np.ndarray
    sharpness: np.ndarray
    summary: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.frame)


def _frames(source: Any, every: int) -> Iterator[tuple[int, float, np.ndarray]]:
    """``(frame number, seconds, RGB image)`` of a video file, a folder of frames, or a sequence of images."""
    from ..io import load_image

    if isinstance(source, (str, os.PathLike)):  # a video file, or a folder of frames (iter_frames reads both)
        try:
            for f in iter_frames(os.fspath(source), every=every):
                if f.image is not None:
                    yield f.index, f.timestamp, f.image
        except VideoTruncatedError as e:  # its frames before the damage were yielded: keep their tracks
            warnings.warn(f"{e}; tracks end there", RuntimeWarning, stacklevel=3)
    elif isinstance(source, Sequence):
        for i in range(0, len(source), every):
            yield i, float("nan"), load_image(source[i])
    else:
        raise TypeError(f"track() takes a video path, a folder of frames or a list of images, got "
                        f"{type(source).__name__}")


def track(source: Any, every: int = 1, *, model: Any = None, tracker: TrackerOptions | None = None,
          min_frames: int = 1, batch_frames: int = 16, **options: Any) -> list[Track]:
    """Every face of a video, or of frames given in order, as tracks (nothing is written).

    The frames are embedded as :func:`facepcl.embed` would (same model, same
    options), then associated by :class:`~facepcl.tracking.Tracker`, which ends
    every track at a shot cut.

    Args:
        source: A video file, a folder of frame images (sorted by name), or a
            list of images (paths, arrays, ... in order).
        every: Use every ``every``-th frame.
        model: As :func:`facepcl.embed` (None: the default model).
        tracker: Association options (default :class:`TrackerOptions`).
        min_frames: Drop tracks with fewer rows.
        batch_frames: Frames embedded together.
        **options: :class:`~facepcl.FaceEmbedder` and detector options, as
            :func:`facepcl.embed` takes them (e.g. ``det_threshold=0.8``).

    Returns:
        The tracks, by their first frame (then id).

    Raises:
        VideoReadError: The video cannot be opened.
        ValueError: A folder without images, or bad options.

    Warns:
        RuntimeWarning: The video is cut short: the tracks of its frames before the damage are returned.
    """
    from ..pipeline import FaceEmbedder
    from ..pipeline._options import split_options

    if every < 1 or batch_frames < 1 or min_frames < 1:
        raise ValueError("every, batch_frames and min_frames must be at least 1")
    opts = tracker or TrackerOptions()
    embedder = FaceEmbedder(model, **split_options(options, FaceEmbedder.options(), "track"))
    video = VideoTracker(opts)
    rows: dict[int, list[dict[str, Any]]] = {}
    batch: list[tuple[int, float, np.ndarray]] = []

    def flush() -> None:
        if not batch:
            return
        result = embedder.embed_loaded([b[2] for b in batch])
        angles = head_angles(result.kps) if len(result) else np.zeros((0, 3), np.float32)
        for j, (number, seconds, image) in enumerate(batch):
            sel = np.flatnonzero(result.image_index == j)
            ids = video.frame(number, image, result.bbox[sel], result.face[sel])
            for k, tid in zip(sel, ids, strict=True):
                rows.setdefault(int(tid), []).append({
                    "frame": number, "timestamp": seconds, "bbox": result.bbox[k], "kps": result.kps[k],
                    "det_score": result.det_score[k], "face": result.face[k], "pose": result.pose[k],
                    "trunk": result.trunk[k], "angles": angles[k], "sharpness": box_sharpness(image, result.bbox[k])})
        batch.clear()

    for item in _frames(source, every):
        batch.append(item)
        if len(batch) >= batch_frames:
            flush()
    flush()
    name = os.fspath(source) if isinstance(source, (str, os.PathLike)) else "<frames>"
    tracks = []
    for tid, items in rows.items():
        if len(items) < min_frames:
            continue
        cols = {k: np.stack([r[k] for r in items]) for k in items[0]}
        t = Track(tid, name, cols["frame"].astype(np.int64), cols["timestamp"].astype(np.float64), cols["bbox"],
                  cols["kps"], cols["det_score"], cols["face"], cols["pose"], cols["trunk"], cols["angles"],
                  cols["sharpness"])
        t.summary = summarize(tid, name, t.frame, t.timestamp, t.bbox, t.angles, t.sharpness, t.face, t.pose)
        tracks.append(t)
    return sorted(tracks, key=lambda t: (int(t.frame[0]), t.track_id))


__all__ = ["Track", "track"]
