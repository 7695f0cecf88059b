"""One row per track: its span, mean face code, representative frame and pose-covering keyframes."""

from __future__ import annotations

from typing import Any

import numpy as np

#: Keyframes chosen per track (fewer when the track is shorter).
KEYFRAMES = 5
#: Spread (degrees) of the frontality weight: a face at this yaw/pitch counts e^-0.5 as frontal.
FRONTAL_DEGREES = 20.0


def box_sharpness(image: np.ndarray, bbox: np.ndarray, size: int = 64) -> float:
    """Variance of the Laplacian of a face's box region, resized to ``size`` px (a crop-free :func:`sharpness`)."""
    import cv2

    h, w = image.shape[:2]
    x1, y1, x2, y2 = np.rint(np.asarray(bbox, np.float64)).astype(int).tolist()
    x1, y1, x2, y2 = max(0, x1), max(0, y1), min(w, x2), min(h, y2)
    if x2 - x1 < 2 or y2 - y1 < 2:
        return float("nan")
    region = cv2.resize(np.ascontiguousarray(image[y1:y2, x1:x2]), (size, size), interpolation=cv2.INTER_AREA)
    return float(cv2.Laplacian(cv2.cvtColor(region, cv2.COLOR_RGB2GRAY), cv2.CV_64F).var())


def representative(angles: np.ndarray, bbox: np.ndarray, sharp: np.ndarray) -> int:
    """Row of the most frontal, sharpest, largest face.

    Score = frontality x (0.5 + 0.5 size) x (0.5 + 0.5 sharpness), where
    frontality is ``exp(-(yaw^2 + pitch^2) / (2 * 20^2))`` (1 when NaN angles:
    no landmarks) and size and sharpness are relative to the track's largest.
    """
    yaw_pitch = np.nan_to_num(np.asarray(angles, np.float64)[:, :2], nan=0.0)
    frontal = np.exp(-(yaw_pitch ** 2).sum(1) / (2 * FRONTAL_DEGREES ** 2))
    side = np.sqrt(np.clip((bbox[:, 2] - bbox[:, 0]) * (bbox[:, 3] - bbox[:, 1]), 0, None))
    size = side / side.max() if side.max() > 0 else np.ones(len(side))
    sharp = np.nan_to_num(np.asarray(sharp, np.float64))
    sharp = sharp / sharp.max() if sharp.max() > 0 else np.ones(len(sharp))
    return int(np.argmax(frontal * (0.5 + 0.5 * size) * (0.5 + 0.5 * sharp)))


def keyframes(pose: np.ndarray, start: int, k: int = KEYFRAMES) -> list[int]:
    """Rows that cover the track's range of poses: farthest-point selection on the unit pose codes.

    Args:
        pose: ``(N, D)`` pose codes.
        start: The first row chosen (the representative one).
        k: How many rows (at most N).

    Returns:
        Row numbers, ascending.
    """
    x = np.asarray(pose, np.float64)
    x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    chosen = [int(start)]
    dist = np.linalg.norm(x - x[start], axis=1)
    while len(chosen) < min(k, len(x)):
        nxt = int(np.argmax(dist))
        if dist[nxt] <= 0:
            break  # the remaining rows repeat a chosen pose
        chosen.append(nxt)
        dist = np.minimum(dist, np.linalg.norm(x - x[nxt], axis=1))
    return sorted(chosen)


def summarize(track_id: int, path: str, frame: np.ndarray, timestamp: np.ndarray, bbox: np.ndarray,
              angles: np.ndarray, sharp: np.ndarray, face: np.ndarray, pose: np.ndarray) -> dict[str, Any]:
    """The summary row of one track (the columns of ``_tracks.parquet``; docs/tracking.md).

    Args:
        track_id: The track.
        path: Its source (video file or frame folder).
        frame: ``(N,)`` frame numbers of its rows, ascending.
        timestamp: ``(N,)`` seconds (NaN when unknown).
        bbox: ``(N, 4)`` boxes.
        angles: ``(N, 3)`` yaw, pitch, roll in degrees (:func:`facepcl.tracking.head_angles`).
        sharp: ``(N,)`` :func:`box_sharpness` of the faces.
        face: ``(N, D)`` face codes.
        pose: ``(N, D)`` pose codes.

    Returns:
        ``track_id``, ``path``, ``first_frame``, ``last_frame``, ``first_timestamp``,
        ``last_timestamp``, ``rows``, ``face`` (the mean of the unit face codes,
        renormalised), ``representative_frame``, ``keyframes`` (frame numbers).
    """
    unit = face / np.maximum(np.linalg.norm(face, axis=1, keepdims=True), 1e-12)
    mean = unit.mean(0)
    mean = (mean / max(float(np.linalg.norm(mean)), 1e-12)).astype(np.float32)
    best = representative(angles, bbox, sharp)
    return {"track_id": int(track_id), "path": path, "first_frame": int(frame[0]), "last_frame": int(frame[-1]),
            "first_timestamp": float(timestamp[0]), "last_timestamp": float(timestamp[-1]), "rows": len(frame),
            "face": mean, "representative_frame": int(frame[best]),
            "keyframes": [int(frame[i]) for i in keyframes(pose, best)]}


__all__ = ["box_sharpness", "keyframes", "representative", "summarize"]
