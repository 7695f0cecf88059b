"""The one face alignment: a similarity warp from 5 landmarks onto the model's template.

A similarity (rotation, uniform scale, translation; no shear, no reflection)
is fitted by least squares from the 5 detected landmarks (left eye, right
eye, nose tip, left and right mouth corner; "left" is the image's left) to
the 5 template points stored in the model's ``config.json``
(``preprocess.template``, in crop pixels), and the image is resampled with
it into a ``crop_size x crop_size`` crop.

Coordinates follow OpenCV: pixel centres sit at integer positions, so pixel
``(0, 0)`` covers ``[-0.5, 0.5] x [-0.5, 0.5]``.

Downscaling is anti-aliased: when the warp shrinks the face (the usual case:
a 200 px face into a 64 px crop), the region the crop needs is first reduced
by the warp's scale with area averaging (``cv2.INTER_AREA``), and only the
remaining rotation is resampled with the config's interpolation. So a face
gives nearly the same crop whatever the resolution of the photo it is in.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import cv2
import numpy as np

from .config import PreprocessConfig

WARP_INTERPOLATIONS = {
    "nearest": cv2.INTER_NEAREST,
    "bilinear": cv2.INTER_LINEAR,
    "bicubic": cv2.INTER_CUBIC,
    "lanczos": cv2.INTER_LANCZOS4,
}
BORDERS = {
    "constant": cv2.BORDER_CONSTANT,  # black
    "reflect": cv2.BORDER_REFLECT_101,  # mirror without repeating the edge pixel (as torch's "reflect")
    "replicate": cv2.BORDER_REPLICATE,
}


def estimate_similarity(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares similarity transform mapping ``src`` points onto ``dst`` points.

    In 2-D a similarity is the complex map ``z -> a*z + b``; its least-squares
    fit has the closed form ``a = <src_c, dst_c> / <src_c, src_c>`` on centred
    points, the same solution as Umeyama's method without reflection.

    Args:
        src: ``(K, 2)`` or ``(N, K, 2)`` source points (x, y), e.g. detected landmarks.
        dst: ``(K, 2)`` or ``(N, K, 2)`` target points, e.g. the template.

    Returns:
        ``(2, 3)`` (or ``(N, 2, 3)``) float64 matrices ``M`` with
        ``dst ~= M[:, :2] @ src + M[:, 2]``, usable by ``cv2.warpAffine``.

    Raises:
        ValueError: Points are not finite, or all source points coincide.
    """
    src = np.asarray(src, dtype=np.float64)
    dst = np.asarray(dst, dtype=np.float64)
    single = src.ndim == 2
    src3 = src[None] if single else src
    dst3 = np.broadcast_to(dst, src3.shape) if dst.ndim == 2 else dst
    if src3.shape[-1] != 2 or src3.shape != dst3.shape or src3.shape[1] < 2:
        raise ValueError(f"point sets must be (K, 2) or (N, K, 2) with K >= 2 and equal shapes; got "
                         f"{src.shape} and {dst.shape}")
    if not (np.isfinite(src3).all() and np.isfinite(dst3).all()):
        raise ValueError("landmarks must be finite (got NaN or inf)")
    zs = src3[..., 0] + 1j * src3[..., 1]
    zd = dst3[..., 0] + 1j * dst3[..., 1]
    ms, md = zs.mean(axis=1, keepdims=True), zd.mean(axis=1, keepdims=True)
    zs_c, zd_c = zs - ms, zd - md
    denom = (np.abs(zs_c) ** 2).sum(axis=1)
    if (denom <= 1e-12).any():
        raise ValueError("all source landmarks coincide; no similarity transform is defined")
    a = (np.conj(zs_c) * zd_c).sum(axis=1) / denom
    b = md[:, 0] - a * ms[:, 0]
    m = np.stack([np.stack([a.real, -a.imag, b.real], -1), np.stack([a.imag, a.real, b.imag], -1)], axis=1)
    return m[0] if single else m


def transform_points(points: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """Apply 2x3 affine matrices to points.

    Args:
        points: ``(..., K, 2)`` points (x, y).
        matrix: ``(2, 3)``, or ``(N, 2, 3)`` with points ``(N, K, 2)``.

    Returns:
        The mapped points, same shape as ``points``, float64.
    """
    pts = np.asarray(points, dtype=np.float64)
    m = np.asarray(matrix, dtype=np.float64)
    return pts @ np.swapaxes(m[..., :2], -1, -2) + m[..., None, :, 2]


def invert_affine(matrix: np.ndarray) -> np.ndarray:
    """Inverse of a ``(2, 3)`` (or ``(N, 2, 3)``) affine matrix."""
    m = np.asarray(matrix, dtype=np.float64)
    lin_inv = np.linalg.inv(m[..., :2])
    return np.concatenate([lin_inv, -(lin_inv @ m[..., 2:])], axis=-1)


def similarity_scale(matrix: np.ndarray) -> float:
    """The uniform scale of a similarity matrix (crop pixels per image pixel)."""
    m = np.asarray(matrix, dtype=np.float64)
    return math.sqrt(abs(float(np.linalg.det(m[:2, :2]))))


def full_image_matrix(height: int, width: int, size: int) -> np.ndarray:
    """The similarity that fits a whole ``height x width`` image into a ``size`` crop, centred.

    Used for inputs that are already aligned faces (``detect=False``) and for
    ``on_no_face="full_image"``. A non-square image keeps its aspect ratio and
    is padded with the border fill.

    Returns:
        A ``(2, 3)`` float64 matrix mapping image pixels to crop pixels.
    """
    s = size / max(height, width)
    # Pixel edges map onto pixel edges: the image's centre lands on the crop's centre.
    tx = (size - 1) / 2 - s * (width - 1) / 2
    ty = (size - 1) / 2 - s * (height - 1) / 2
    return np.array([[s, 0.0, tx], [0.0, s, ty]])


def warp(image: np.ndarray, matrix: np.ndarray, size: int, *, interpolation: str = "bilinear",
         border: str = "constant") -> np.ndarray:
    """Resample ``image`` through ``matrix`` into a ``size x size`` crop (anti-aliased when shrinking).

    Args:
        image: ``(H, W, 3)`` uint8 RGB image.
        matrix: ``(2, 3)`` affine map from image pixels to crop pixels.
        size: Side of the crop in pixels.
        interpolation: "nearest", "bilinear", "bicubic" or "lanczos".
        border: Fill outside the image: "constant" (black), "reflect" or "replicate".

    Returns:
        ``(size, size, 3)`` uint8 crop.
    """
    flags = _lookup(WARP_INTERPOLATIONS, interpolation, "interpolation")
    border_mode = _lookup(BORDERS, border, "border")
    m = np.asarray(matrix, dtype=np.float64)
    scale = math.sqrt(abs(float(np.linalg.det(m[:, :2]))))
    src, m = (image, m) if scale >= 1.0 else _prescale(image, m, size, scale)
    return cv2.warpAffine(src, m, (size, size), flags=flags, borderMode=border_mode, borderValue=(0, 0, 0))


def _prescale(image: np.ndarray, m: np.ndarray, size: int, scale: float) -> tuple[np.ndarray, np.ndarray]:
    """Area-average the region the crop needs down by ``scale``; return it and the adjusted matrix."""
    h, w = image.shape[:2]
    corners = np.array([[-0.5, -0.5], [size - 0.5, -0.5], [-0.5, size - 0.5], [size - 0.5, size - 0.5]])
    footprint = transform_points(corners, invert_affine(m))
    margin = 2.0 / scale + 2.0  # room for the interpolation kernel after shrinking
    x0 = max(0, math.floor(footprint[:, 0].min() - margin))
    y0 = max(0, math.floor(footprint[:, 1].min() - margin))
    x1 = min(w, math.ceil(footprint[:, 0].max() + margin) + 1)
    y1 = min(h, math.ceil(footprint[:, 1].max() + margin) + 1)
    if x1 - x0 < 2 or y1 - y0 < 2:
        return image, m  # the crop lies (almost) entirely outside the image: nothing to average
    roi = image[y0:y1, x0:x1]
    new_w = max(1, round((x1 - x0) * scale))
    new_h = max(1, round((y1 - y0) * scale))
    small = cv2.resize(roi, (new_w, new_h), interpolation=cv2.INTER_AREA)
    kx, ky = (x1 - x0) / new_w, (y1 - y0) / new_h
    # small-image pixel r maps back to image pixel k*(r + 0.5) - 0.5 + offset (centres at integers)
    to_image = np.array([[kx, 0.0, kx / 2 - 0.5 + x0], [0.0, ky, ky / 2 - 0.5 + y0]])
    adjusted = np.concatenate([m[:, :2] @ to_image[:, :2], m[:, :2] @ to_image[:, 2:] + m[:, 2:]], axis=1)
    return small, adjusted


def _lookup(table: dict[str, int], key: str, what: str) -> int:
    try:
        return table[key]
    except KeyError:
        raise ValueError(f"unknown {what} {key!r}; choose from {sorted(table)}") from None


def template(preprocess: PreprocessConfig, crop_size: int | None = None) -> np.ndarray:
    """The 5 template points ``(5, 2)`` in crop pixels, scaled to ``crop_size`` if given."""
    pre = preprocess if crop_size is None or crop_size == preprocess.crop_size else preprocess.resized(crop_size)
    pts = np.asarray(pre.template, dtype=np.float64)
    if pts.shape != (5, 2):
        raise ValueError(f"preprocess.template must be 5 [x, y] points, got shape {pts.shape}")
    return pts


def align_faces(image: np.ndarray, kps: np.ndarray | Sequence, preprocess: PreprocessConfig,
                crop_size: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Aligned crops of every face of one image.

    Args:
        image: ``(H, W, 3)`` uint8 RGB image (see :func:`facepcl.io.load_image`).
        kps: ``(N, 5, 2)`` landmarks in image pixels (or ``(5, 2)`` for one face).
        preprocess: The model's preprocessing (template, crop size, interpolation, border).
        crop_size: Crop side in pixels (default ``preprocess.crop_size``); the
            template scales with it.

    Returns:
        ``(crops, matrices)``: ``(N, S, S, 3)`` uint8 crops and the ``(N, 2, 3)``
        image-to-crop matrices (map landmarks with :func:`transform_points`).
    """
    size = int(crop_size or preprocess.crop_size)
    pts = np.asarray(kps, dtype=np.float64)
    if pts.ndim == 2:
        pts = pts[None]
    if pts.shape[1:] != (5, 2):
        raise ValueError(f"kps must be (N, 5, 2) landmarks, got shape {pts.shape}")
    crops = np.zeros((len(pts), size, size, 3), dtype=np.uint8)
    if len(pts) == 0:
        return crops, np.zeros((0, 2, 3))
    matrices = estimate_similarity(pts, template(preprocess, size))
    for i, m in enumerate(matrices):
        crops[i] = warp(image, m, size, interpolation=preprocess.interpolation, border=preprocess.border)
    return crops, matrices
