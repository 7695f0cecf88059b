"""Approximate head angles (yaw, pitch, roll, in degrees) from the five landmarks and a generic 3-D face.

The five landmarks (left eye, right eye, nose tip, left and right mouth
corner; "left" is the image's left) are compared with a generic adult face
seen under weak perspective: eye centres 63 mm apart, the nose tip 36 mm
below the eye line and 25 mm in front of it, the mouth corners 73 mm below
the eye line, 52 mm apart and 5 mm in front of it.

- **roll** is the angle of the eye line from the image's horizontal: exact up
  to the landmarks' own error, whatever the face's shape (a photo rotated by
  10 degrees gives a roll 10 degrees larger). Positive: clockwise in the image
  (the image-right eye lower).
- **yaw** comes from the nose tip's sideways offset from the eye midpoint, in
  the frame where the eye line is level, relative to the eye distance.
  Positive: the nose points to the image's right (the person turns to their
  own left). A mirrored photo gives the opposite sign.
- **pitch** comes from where the nose tip sits between the eye line and the
  mouth line. Positive: looking up.

They are approximate (a generic face, no camera model): use them to rank
faces by frontality and to plot head movement, not as a pose estimator.
"""

from __future__ import annotations

import numpy as np

#: The generic face, in millimetres (x right, y down, z toward the camera).
EYE_DISTANCE = 63.0
NOSE_DROP, NOSE_DEPTH = 36.0, 25.0
MOUTH_DROP, MOUTH_DEPTH = 73.0, 5.0


def head_angles(kps: np.ndarray) -> np.ndarray:
    """Yaw, pitch and roll of faces from their five landmarks.

    Args:
        kps: ``(N, 5, 2)`` (or ``(5, 2)``) landmarks in image pixels, in
            RetinaFace's order (left eye, right eye, nose tip, left mouth
            corner, right mouth corner; left/right as seen in the image).

    Returns:
        ``(N, 3)`` (or ``(3,)``) float32 ``[yaw, pitch, roll]`` in degrees; NaN
        for faces without landmarks (NaN input) or with both eyes on one point.
    """
    pts = np.asarray(kps, dtype=np.float64)
    single = pts.ndim == 2
    if single:
        pts = pts[None]
    if pts.ndim != 3 or pts.shape[1:] != (5, 2):
        raise ValueError(f"landmarks must be (N, 5, 2) or (5, 2), got shape {pts.shape}")
    le, re, nose, lm, rm = (pts[:, i] for i in range(5))
    eye_vec = re - le
    iod = np.hypot(eye_vec[:, 0], eye_vec[:, 1])
    roll = np.arctan2(eye_vec[:, 1], eye_vec[:, 0])
    # the landmarks in the frame where the eye line is level (rotate by -roll about the eye midpoint)
    c, s = np.cos(-roll), np.sin(-roll)
    eye_mid = (le + re) / 2

    def level(p: np.ndarray) -> np.ndarray:
        d = p - eye_mid
        return np.stack([c * d[:, 0] - s * d[:, 1], s * d[:, 0] + c * d[:, 1]], axis=1)

    n, mouth = level(nose), level((lm + rm) / 2)
    with np.errstate(divide="ignore", invalid="ignore"):
        # x: nose offset = NOSE_DEPTH sin(yaw), eye distance = EYE_DISTANCE cos(yaw)
        yaw = np.arctan(n[:, 0] / iod * EYE_DISTANCE / NOSE_DEPTH)
        # y: r = nose / mouth height = (D_n cos p - Z_n sin p) / (D_m cos p - Z_m sin p)
        r = n[:, 1] / mouth[:, 1]
        pitch = np.arctan2(MOUTH_DROP * r - NOSE_DROP, MOUTH_DEPTH * r - NOSE_DEPTH)
        pitch = np.where(pitch > np.pi / 2, pitch - np.pi, np.where(pitch < -np.pi / 2, pitch + np.pi, pitch))
    out = np.degrees(np.stack([yaw, pitch, roll], axis=1)).astype(np.float32)
    out[~(iod > 1e-6)] = np.nan
    return out[0] if single else out


__all__ = ["head_angles"]
