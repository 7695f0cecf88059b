"""The one similarity warp: estimation against a reference solver, point mapping, resampling, anti-aliasing."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest

from facepcl import PreprocessConfig
from facepcl.align import (
    align_faces,
    estimate_similarity,
    full_image_matrix,
    invert_affine,
    similarity_scale,
    template,
    transform_points,
    warp,
)


def _similarity(angle_deg: float, scale: float, tx: float, ty: float) -> np.ndarray:
    a = math.radians(angle_deg)
    return np.array([[scale * math.cos(a), -scale * math.sin(a), tx], [scale * math.sin(a), scale * math.cos(a), ty]])


def _lstsq_reference(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Textbook least squares for x' = a x - b y + tx, y' = b x + a y + ty."""
    rows, rhs = [], []
    for (x, y), (u, v) in zip(src, dst, strict=True):
        rows += [[x, -y, 1, 0], [y, x, 0, 1]]
        rhs += [u, v]
    a, b, tx, ty = np.linalg.lstsq(np.array(rows), np.array(rhs), rcond=None)[0]
    return np.array([[a, -b, tx], [b, a, ty]])


def test_recovers_an_exact_similarity():
    tmpl = template(PreprocessConfig())
    true = _similarity(17.0, 0.37, 12.5, -4.0)
    src = transform_points(tmpl, invert_affine(true))
    np.testing.assert_allclose(estimate_similarity(src, tmpl), true, atol=1e-9)


def test_matches_reference_least_squares_on_noisy_points():
    rng = np.random.default_rng(3)
    tmpl = template(PreprocessConfig())
    for _ in range(20):
        m = _similarity(rng.uniform(-60, 60), rng.uniform(0.1, 3), *rng.uniform(-100, 100, 2))
        src = transform_points(tmpl, m) + rng.normal(0, 2.0, (5, 2))
        np.testing.assert_allclose(estimate_similarity(src, tmpl), _lstsq_reference(src, tmpl), atol=1e-8)


def test_batched_estimate_equals_single():
    rng = np.random.default_rng(4)
    tmpl = template(PreprocessConfig())
    src = tmpl[None] * rng.uniform(2, 5, (6, 1, 1)) + rng.normal(0, 5, (6, 5, 2))
    batched = estimate_similarity(src, tmpl)
    assert batched.shape == (6, 2, 3)
    for i in range(6):
        np.testing.assert_allclose(batched[i], estimate_similarity(src[i], tmpl), atol=1e-12)


def test_never_reflects():
    tmpl = template(PreprocessConfig())
    mirrored = tmpl * [-1, 1]  # a mirror image of the template
    m = estimate_similarity(mirrored, tmpl)
    assert np.linalg.det(m[:, :2]) > 0


def test_degenerate_and_non_finite_landmarks_are_refused():
    tmpl = template(PreprocessConfig())
    with pytest.raises(ValueError, match="coincide"):
        estimate_similarity(np.ones((5, 2)), tmpl)
    bad = tmpl.copy()
    bad[2, 0] = np.nan
    with pytest.raises(ValueError, match="finite"):
        estimate_similarity(bad, tmpl)
    with pytest.raises(ValueError, match="shapes"):
        estimate_similarity(np.ones((4, 2)), tmpl)


def test_transform_and_invert_round_trip():
    m = _similarity(-33, 2.5, 3, 7)
    pts = np.random.default_rng(0).uniform(-50, 50, (10, 2))
    np.testing.assert_allclose(transform_points(transform_points(pts, m), invert_affine(m)), pts, atol=1e-9)
    assert similarity_scale(m) == pytest.approx(2.5)
    batch = np.stack([m, invert_affine(m)])
    out = transform_points(np.stack([pts, pts]), batch)
    np.testing.assert_allclose(out[0], transform_points(pts, m))


def _blob_image(h: int, w: int, centre: tuple[float, float], sigma: float) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w]
    g = np.exp(-((xx - centre[0]) ** 2 + (yy - centre[1]) ** 2) / (2 * sigma**2))
    return np.repeat((g * 255).round().astype(np.uint8)[..., None], 3, axis=2)


def _centroid(img: np.ndarray) -> np.ndarray:
    g = img[..., 0].astype(np.float64)
    yy, xx = np.mgrid[0:g.shape[0], 0:g.shape[1]]
    return np.array([(g * xx).sum() / g.sum(), (g * yy).sum() / g.sum()])


@pytest.mark.parametrize("scale", [2.0, 0.8, 0.3, 0.12])
def test_points_land_where_the_matrix_says(scale):
    # A blob at a known point must land at M @ point, both when enlarging and when shrinking
    # (shrinking takes the area-averaging path).
    size = 64
    src_pt = (341.3, 217.8)
    sigma = 3.0 / scale  # about 3 px wide in the crop
    h, w = 480, 640
    img = _blob_image(h, w, src_pt, sigma)
    m = _similarity(25.0, scale, 0.0, 0.0)
    target = np.array([30.4, 33.7])
    m[:, 2] = target - transform_points(np.array([src_pt]), m)[0]
    crop = warp(img, m, size)
    np.testing.assert_allclose(_centroid(crop), target, atol=0.15)


def test_shrinking_is_anti_aliased():
    # A 1-pixel checkerboard shrunk 5x must become flat grey; plain bilinear sampling would alias.
    board = ((np.indices((500, 500)).sum(0) % 2) * 255).astype(np.uint8)
    img = np.repeat(board[..., None], 3, axis=2)
    m = _similarity(10.0, 0.2, -10.0, -10.0)
    crop = warp(img, m, 64)
    inner = crop[4:-4, 4:-4, 0].astype(float)
    assert abs(inner.mean() - 127.5) < 3
    assert inner.std() < 4
    aliased = cv2.warpAffine(img, m, (64, 64), flags=cv2.INTER_LINEAR)[4:-4, 4:-4, 0].astype(float)
    assert aliased.std() > 20  # the check above can fail: naive warping of this pattern aliases


def test_crop_does_not_depend_on_photo_resolution(photos, cpu_detector):
    # The same face in a photo and in its 2x enlargement gives nearly the same crop.
    img = photos["astronaut.png"]
    kps = cpu_detector.detect(img).kps[:1]
    big = cv2.resize(img, None, fx=2, fy=2, interpolation=cv2.INTER_CUBIC)
    pre = PreprocessConfig()
    small_crop = align_faces(img, kps, pre)[0][0].astype(float)
    big_crop = align_faces(big, (kps + 0.5) * 2 - 0.5, pre)[0][0].astype(float)
    assert np.abs(small_crop - big_crop).mean() < 3.0


def test_full_image_matrix_fits_and_centres():
    m = full_image_matrix(100, 100, 64)
    corners = np.array([[-0.5, -0.5], [99.5, 99.5]])
    np.testing.assert_allclose(transform_points(corners, m), [[-0.5, -0.5], [63.5, 63.5]])
    wide = full_image_matrix(50, 200, 64)  # letterboxed: width fills, height centred
    np.testing.assert_allclose(transform_points(np.array([[-0.5, 24.5], [199.5, 24.5]]), wide)[:, 0], [-0.5, 63.5])
    np.testing.assert_allclose(transform_points(np.array([[99.5, 24.5]]), wide)[0], [31.5, 31.5])
    img = np.full((100, 100, 3), 200, np.uint8)
    crop = warp(img, m, 64)
    assert crop.min() >= 199  # a square image fills the crop completely


def test_align_faces_shapes_template_scaling_and_options(photos, cpu_detector):
    img = photos["multi_face.jpg"]
    det = cpu_detector.detect(img)
    pre = PreprocessConfig()
    crops, mats = align_faces(img, det.kps, pre)
    assert crops.shape == (5, 64, 64, 3)
    assert crops.dtype == np.uint8
    assert mats.shape == (5, 2, 3)
    crops112, mats112 = align_faces(img, det.kps, pre, crop_size=112)
    assert crops112.shape == (5, 112, 112, 3)
    # pixel centres at integer coordinates: scaling is about the corner (-0.5, -0.5)
    np.testing.assert_allclose(template(pre, 112), (template(pre) + 0.5) * 112 / 64 - 0.5, atol=1e-3)
    # the same faces: the 112 px transform is the 64 px one scaled by 112/64
    np.testing.assert_allclose(mats112[:, :, :2], mats[:, :, :2] * 112 / 64, rtol=1e-4)
    empty, m0 = align_faces(img, np.zeros((0, 5, 2)), pre)
    assert empty.shape == (0, 64, 64, 3)
    assert m0.shape == (0, 2, 3)
    for interp in ("nearest", "bicubic", "lanczos"):
        for border in ("reflect", "replicate"):
            other = PreprocessConfig(interpolation=interp, border=border)
            assert align_faces(img, det.kps[:1], other)[0].shape == (1, 64, 64, 3)
    with pytest.raises(ValueError, match="interpolation"):
        align_faces(img, det.kps, PreprocessConfig(interpolation="area"))
    with pytest.raises(ValueError, match="border"):
        align_faces(img, det.kps, PreprocessConfig(border="wrap"))


def test_eyes_land_on_the_template(photos, cpu_detector):
    # Landmarks mapped through the fitted warp sit on the template, eyes closest of all
    # (a face's 5 points are close to a similarity of the mean face).
    pre = PreprocessConfig()
    tmpl = template(pre)
    for name in ("multi_face.jpg", "single_face.jpg", "astronaut.png"):
        det = cpu_detector.detect(photos[name])
        _, mats = align_faces(photos[name], det.kps, pre)
        mapped = transform_points(det.kps.astype(np.float64), mats)
        eye_err = np.linalg.norm(mapped[:, :2] - tmpl[:2], axis=-1)
        assert eye_err.max() < 0.06 * pre.crop_size, (name, eye_err)
