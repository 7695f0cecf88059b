"""PCL's augmentations (pcl-reference.md section 3), batched on tensors.

Random parameters are drawn per view from a numpy Generator (in the data
loader workers, one generator per sample, so the result does not depend on
the number of workers or processes); the pixel operations then run on whole
batches on the training device:

- face views: two patches of ``0.4H x 0.4W`` from two different quadrants
  of the frame (:func:`quadrant_patches`), each resized to 64;
- every contrastive view: colour jitter (0.8, 0.8, 0.8, 0.2) with p 0.8 (the
  four adjustments in a random order), grayscale with p 0.2, Gaussian blur
  (kernel 7, sigma 0.1-2, reflected borders) with p 0.8, gradient magnitude
  ("Sobel") with p 0.6; none of them moves a pixel, so a view keeps the
  pose of its frame;
- pose negatives: the same pipeline on the horizontally flipped frame, which
  mirrors the pose and keeps the face;
- reconstruction inputs: Gaussian noise (sigma 0.4) on the frame and on its
  flip; targets stay clean.

Pixels are float in [0, 1] throughout; unlike the reference (which runs the
chain on 8-bit PIL images) nothing is rounded to 8 bits between steps. Every
encoder input then goes through the exported model's normalisation
(:func:`facepcl.preprocess.normalize`, as served by :func:`facepcl.transforms`);
reconstruction targets stay in [0, 1].
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from ..config import PreprocessConfig
from ..preprocess import normalize
from .config import AugmentConfig, RunConfig

# Columns of a view's parameter row.
JITTER_ON, BRIGHTNESS, CONTRAST, SATURATION, HUE = 0, 1, 2, 3, 4
ORDER = slice(5, 9)  # a permutation of the four jitter operations (0..3 in the order above)
GRAY_ON, BLUR_ON, BLUR_SIGMA, SOBEL_ON = 9, 10, 11, 12
NUM_PARAMS = 13

# ITU-R 601 luma, as Pillow's convert("L") (the reference's grayscale, contrast and saturation).
_LUMA = (0.299, 0.587, 0.114)
# The reference's gradient layer weights its gray image with these (BT.601 studio-swing Y without offset).
_SOBEL_GRAY = (65.738 / 256, 129.057 / 256, 25.064 / 256)


def sample_view_params(rng: np.random.Generator, n: int, cfg: AugmentConfig) -> np.ndarray:
    """Draw the random parameters of ``n`` contrastive views.

    Args:
        rng: numpy Generator (one per sample in the data loader).
        n: Number of views.
        cfg: Augmentation settings.

    Returns:
        ``(n, NUM_PARAMS)`` float32; see the column constants of this module.
    """
    b, c, s, h = cfg.jitter
    p = np.zeros((n, NUM_PARAMS), np.float32)
    p[:, JITTER_ON] = rng.random(n) < cfg.jitter_p
    p[:, BRIGHTNESS] = rng.uniform(max(0.0, 1 - b), 1 + b, n)
    p[:, CONTRAST] = rng.uniform(max(0.0, 1 - c), 1 + c, n)
    p[:, SATURATION] = rng.uniform(max(0.0, 1 - s), 1 + s, n)
    p[:, HUE] = rng.uniform(-h, h, n)
    p[:, ORDER] = rng.permuted(np.tile(np.arange(4), (n, 1)), axis=1)
    p[:, GRAY_ON] = rng.random(n) < cfg.gray_p
    p[:, BLUR_ON] = rng.random(n) < cfg.blur_p
    p[:, BLUR_SIGMA] = rng.uniform(cfg.blur_sigma[0], cfg.blur_sigma[1], n)
    p[:, SOBEL_ON] = rng.random(n) < cfg.sobel_p
    return p


def quadrant_patches(image: np.ndarray, rng: np.random.Generator, ratio: float, size: int) -> np.ndarray:
    """Two square-ish patches from two different quadrants of a frame, resized.

    With ``bh = int(ratio/2 * H)`` and ``bw = int(ratio/2 * W)``, two distinct
    quadrants are drawn; in each, a centre ``(x, y)`` is drawn uniformly so
    that the ``2bh x 2bw`` patch around it lies inside that quadrant (the
    reference's DistanceCrop), and the patch is resized to ``size x size``
    (bilinear, antialiased).

    Args:
        image: ``(H, W, 3)`` uint8 frame at its own resolution.
        rng: numpy Generator.
        ratio: Patch side as a fraction of the frame side (0.4).
        size: Output side in pixels.

    Returns:
        ``(2, size, size, 3)`` uint8.
    """
    h, w = image.shape[:2]
    bh, bw = int(h * ratio / 2), int(w * ratio / 2)
    if bh < 1 or bw < 1 or bw >= w // 2 or bh >= h // 2:
        raise ValueError(f"frame of {w}x{h} pixels is too small for {ratio} patches; use frames of at least "
                         f"{int(np.ceil(2 / ratio))} pixels")
    out = np.empty((2, size, size, 3), np.uint8)
    for i, q in enumerate(rng.choice(4, size=2, replace=False)):
        right, bottom = q in (1, 3), q in (2, 3)
        x = int(rng.integers(w // 2 + bw if right else bw, (w - bw if right else w // 2 - bw) + 1))
        y = int(rng.integers(h // 2 + bh if bottom else bh, (h - bh if bottom else h // 2 - bh) + 1))
        patch = image[y - bh:y + bh, x - bw:x + bw]
        out[i] = resize(patch, size)
    return out


def resize(image: np.ndarray, size: int) -> np.ndarray:
    """Resize an ``(H, W, 3)`` uint8 image to ``size x size`` with Pillow's bilinear filter (antialiased)."""
    if image.shape[0] == size and image.shape[1] == size:
        return np.array(image, copy=True)
    return np.array(Image.fromarray(image).resize((size, size), Image.BILINEAR))


def to_float(images: torch.Tensor, device: torch.device, channels_last: bool) -> torch.Tensor:
    """``(n, H, W, 3)`` uint8 (as the loader delivers) -> ``(n, 3, H, W)`` float in [0, 1] on ``device``."""
    x = images.to(device, non_blocking=True).permute(0, 3, 1, 2).float().div_(255.0)
    return x if channels_last else x.contiguous()


def _luma(x: torch.Tensor, weights: tuple[float, float, float] = _LUMA) -> torch.Tensor:
    r, g, b = x.unbind(1)
    return (weights[0] * r + weights[1] * g + weights[2] * b).unsqueeze(1)


def _per_view(v: torch.Tensor) -> torch.Tensor:
    return v.view(-1, 1, 1, 1)


def adjust_brightness(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """Blend with black: ``clamp(f * x)``; ``x`` is ``(V, 3, H, W)``, ``factor`` ``(V,)``."""
    return (x * _per_view(factor)).clamp_(0.0, 1.0)


def adjust_contrast(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """Blend with the mean gray level of each view: ``clamp(f * x + (1 - f) * mean)``."""
    mean = _luma(x).mean(dim=(1, 2, 3), keepdim=True)
    f = _per_view(factor)
    return (f * x + (1 - f) * mean).clamp_(0.0, 1.0)


def adjust_saturation(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """Blend with the view's grayscale image: ``clamp(f * x + (1 - f) * gray)``."""
    f = _per_view(factor)
    return (f * x + (1 - f) * _luma(x)).clamp_(0.0, 1.0)


def rgb_to_hsv(x: torch.Tensor) -> torch.Tensor:
    """``(V, 3, H, W)`` RGB in [0, 1] -> HSV with every channel in [0, 1] (hue in turns)."""
    r, g, b = x.unbind(1)
    maxc, argmax = x.max(dim=1)
    minc = x.min(dim=1).values
    delta = maxc - minc
    safe = torch.where(delta > 0, delta, torch.ones_like(delta))
    s = torch.where(maxc > 0, delta / torch.where(maxc > 0, maxc, torch.ones_like(maxc)), torch.zeros_like(maxc))
    h = torch.where(argmax == 0, (g - b) / safe,
                    torch.where(argmax == 1, 2.0 + (b - r) / safe, 4.0 + (r - g) / safe))
    h = torch.where(delta > 0, torch.remainder(h / 6.0, 1.0), torch.zeros_like(h))
    return torch.stack([h, s, maxc], dim=1)


def hsv_to_rgb(x: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`rgb_to_hsv`."""
    h, s, v = x.unbind(1)
    h6 = h * 6.0
    i = torch.floor(h6)
    f = h6 - i
    i = torch.remainder(i, 6).long()
    p, q, t = v * (1 - s), v * (1 - s * f), v * (1 - s * (1 - f))
    # Channel c (r, g, b) in hue sector k (0..5) is choices[:, 6 * c + k].
    choices = torch.stack([v, q, p, p, t, v, t, v, v, q, p, p, p, p, t, v, v, q], dim=1)
    return choices.gather(1, torch.stack([i, i + 6, i + 12], dim=1))


def adjust_hue(x: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """Rotate the hue of each view by ``shift`` turns (``(V,)``, in [-0.5, 0.5])."""
    hsv = rgb_to_hsv(x)
    h = torch.remainder(hsv[:, 0] + shift.view(-1, 1, 1), 1.0)
    return hsv_to_rgb(torch.stack([h, hsv[:, 1], hsv[:, 2]], dim=1)).clamp_(0.0, 1.0)


def to_grayscale(x: torch.Tensor) -> torch.Tensor:
    """Luma repeated over the three channels."""
    return _luma(x).expand(-1, 3, -1, -1).contiguous()


def gaussian_kernels(sigma: torch.Tensor, size: int) -> torch.Tensor:
    """Normalised 1-D Gaussian kernels, ``(V,)`` sigmas -> ``(V, size)``."""
    r = size // 2
    xs = torch.arange(-r, r + 1, device=sigma.device, dtype=torch.float32)
    k = torch.exp(-xs.pow(2)[None] / (2 * sigma.float()[:, None].pow(2)))
    return k / k.sum(dim=1, keepdim=True)


def gaussian_blur(x: torch.Tensor, sigma: torch.Tensor, size: int) -> torch.Tensor:
    """Separable Gaussian blur with a per-view sigma and reflected borders.

    Args:
        x: ``(V, C, H, W)``.
        sigma: ``(V,)`` standard deviations in pixels.
        size: Odd kernel size.

    Returns:
        ``(V, C, H, W)``.
    """
    v, c, h, w = x.shape
    r = size // 2
    k = gaussian_kernels(sigma, size).to(x.dtype).repeat_interleave(c, dim=0)  # (V*C, size)
    y = F.pad(x.reshape(1, v * c, h, w), (r, r, r, r), mode="reflect")
    y = F.conv2d(y, k.view(v * c, 1, size, 1), groups=v * c)
    y = F.conv2d(y, k.view(v * c, 1, 1, size), groups=v * c)
    return y.view(v, c, h, w)


def gradient_magnitude(x: torch.Tensor) -> torch.Tensor:
    """The reference's "Sobel" view: central-difference gradient magnitude of a gray image.

    Gray = 0.2568 R + 0.5041 G + 0.0979 B (the reference's weights); ``gx =
    g[y, x+1] - g[y, x-1]``, ``gy = g[y+1, x] - g[y-1, x]`` with zeros outside
    the image; ``sqrt(gx^2 + gy^2 + 1e-6)`` repeated over 3 channels and
    clipped to [0, 1] (the reference converts it to 8 bits without clipping,
    so its rare values above 1 wrap around).
    """
    g = F.pad(_luma(x, _SOBEL_GRAY), (1, 1, 1, 1))
    gx = g[:, :, 1:-1, 2:] - g[:, :, 1:-1, :-2]
    gy = g[:, :, 2:, 1:-1] - g[:, :, :-2, 1:-1]
    mag = torch.sqrt(gx * gx + gy * gy + 1e-6).clamp_(0.0, 1.0)
    return mag.expand(-1, 3, -1, -1).contiguous()


_JITTER_OPS = (
    (BRIGHTNESS, adjust_brightness),
    (CONTRAST, adjust_contrast),
    (SATURATION, adjust_saturation),
    (HUE, adjust_hue),
)


def _apply_where(x: torch.Tensor, mask: torch.Tensor, fn, *args: torch.Tensor) -> torch.Tensor:
    idx = mask.nonzero().squeeze(1)
    if idx.numel():
        x[idx] = fn(x[idx], *(a[idx] for a in args)).to(x.dtype)
    return x


def augment_views(x: torch.Tensor, params: torch.Tensor, cfg: AugmentConfig) -> torch.Tensor:
    """Apply colour jitter, grayscale, blur and gradient magnitude to a batch of views.

    Args:
        x: ``(V, 3, H, W)`` float in [0, 1].
        params: ``(V, NUM_PARAMS)`` from :func:`sample_view_params`.
        cfg: Augmentation settings (blur kernel size).

    Returns:
        ``(V, 3, H, W)`` float in [0, 1], a new tensor.
    """
    if params.shape != (x.shape[0], NUM_PARAMS):
        raise ValueError(f"params must be ({x.shape[0]}, {NUM_PARAMS}), got {tuple(params.shape)}")
    x = x.contiguous().clone()
    p = params.to(x.device, torch.float32)
    jitter = p[:, JITTER_ON] > 0.5
    order = p[:, ORDER].round().long()
    for position in range(4):
        for op, (col, fn) in enumerate(_JITTER_OPS):
            x = _apply_where(x, jitter & (order[:, position] == op), fn, p[:, col])
    x = _apply_where(x, p[:, GRAY_ON] > 0.5, to_grayscale)
    x = _apply_where(x, p[:, BLUR_ON] > 0.5, lambda v, s: gaussian_blur(v, s, cfg.blur_kernel), p[:, BLUR_SIGMA])
    x = _apply_where(x, p[:, SOBEL_ON] > 0.5, gradient_magnitude)
    return x


def make_inputs(batch: dict[str, torch.Tensor], cfg: RunConfig, device: torch.device,
                channels_last: bool = False) -> dict[str, dict[str, torch.Tensor]]:
    """Turn a collated loader batch into the network inputs of the three steps.

    Args:
        batch: From :func:`facepcl.train.data.collate`: ``rec_frames (n, S, S, 3)``
            uint8, ``rec_noise (n, 2, S, S, 3)``, ``face_patches (n, 2, S, S, 3)``,
            ``face_params (n, 2, P)``, ``pose_frames (b, S, S, 3)``,
            ``pose_params (b, 2 + M, P)``.
        cfg: Run config (noise level, augmentation settings).
        device: Where to build the inputs.
        channels_last: Memory format of the network inputs.

    Returns:
        ``{"rec": {noisy (2n,3,S,S), s, s_flip}, "face": {views (2n,3,S,S)},
        "pose": {anchors (2b,3,S,S), negatives (b*M,3,S,S)}}``; two-view
        tensors hold all first views, then all second views; negatives hold
        the M flipped copies of frame 0, then those of frame 1, ... Encoder
        inputs (noisy, views, anchors, negatives) are normalised as the
        exported model's config says (``export.preprocess``); the targets
        ``s`` and ``s_flip`` stay RGB in [0, 1].
    """
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    aug = cfg.augment
    # What the exported model will be served with; the package default (no mean/std) changes nothing.
    served = PreprocessConfig(**cfg.export.preprocess) if cfg.export.preprocess else PreprocessConfig()

    s = to_float(batch["rec_frames"], device, channels_last)
    s_flip = s.flip(-1)
    noise = batch["rec_noise"].to(device, non_blocking=True).permute(1, 0, 4, 2, 3)  # (2, n, 3, S, S)
    std = cfg.loss.noise_std
    noisy = torch.cat([s + std * noise[0], s_flip + std * noise[1]])

    patches = batch["face_patches"]  # (n, 2, S, S, 3)
    n = patches.shape[0]
    views = to_float(patches.transpose(0, 1).reshape(2 * n, *patches.shape[2:]), device, False)
    views = augment_views(views, batch["face_params"].transpose(0, 1).reshape(2 * n, -1), aug)

    frames = to_float(batch["pose_frames"], device, False)  # (b, 3, S, S)
    params = batch["pose_params"]  # (b, 2 + M, P)
    b, m = frames.shape[0], params.shape[1] - 2
    anchors = augment_views(frames.repeat(2, 1, 1, 1), params[:, :2].transpose(0, 1).reshape(2 * b, -1), aug)
    negatives = augment_views(frames.flip(-1).repeat_interleave(m, dim=0), params[:, 2:].reshape(b * m, -1), aug)
    return {
        "rec": {"noisy": normalize(noisy, served).contiguous(memory_format=fmt), "s": s, "s_flip": s_flip},
        "face": {"views": normalize(views, served).contiguous(memory_format=fmt)},
        "pose": {"anchors": normalize(anchors, served).contiguous(memory_format=fmt),
                 "negatives": normalize(negatives, served).contiguous(memory_format=fmt)},
    }
