"""Small drawing helpers shared by the swap grid and the embedding map: fonts, colours, tiles."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

# Categorical colours, chosen for contrast on white and with each other (first ones most distinct).
PALETTE: tuple[tuple[int, int, int], ...] = (
    (31, 119, 180), (230, 85, 13), (44, 160, 44), (214, 39, 40), (148, 103, 189),
    (140, 86, 75), (227, 119, 194), (188, 189, 34), (23, 190, 207), (65, 65, 65),
    (174, 199, 232), (253, 174, 107), (152, 223, 138), (255, 152, 150), (197, 176, 213),
    (196, 156, 148), (247, 182, 210), (219, 219, 141), (158, 218, 229), (160, 160, 160),
)
MISSING_COLOUR = (200, 200, 200)
# A perceptually ordered ramp (dark blue -> teal -> green -> yellow) for continuous values.
_RAMP = np.array([(68, 1, 84), (59, 82, 139), (33, 145, 140), (94, 201, 98), (253, 231, 37)], dtype=np.float64)

RESAMPLE = {"nearest": Image.Resampling.NEAREST, "bicubic": Image.Resampling.BICUBIC,
            "bilinear": Image.Resampling.BILINEAR, "lanczos": Image.Resampling.LANCZOS}


def font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    """Pillow's default font at ``size`` pixels (a fixed bitmap font on Pillow < 10.1)."""
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1 has one bitmap size only
        return ImageFont.load_default()


def text_size(draw: ImageDraw.ImageDraw, text: str, fnt) -> tuple[int, int]:
    """Width and height in pixels of ``text`` (one or more lines) in ``fnt``."""
    x0, y0, x1, y1 = draw.multiline_textbbox((0, 0), text, font=fnt, spacing=2)
    return int(np.ceil(x1 - min(0, x0))), int(np.ceil(y1 - min(0, y0)))


def ramp(values: np.ndarray) -> np.ndarray:
    """Colours ``(N, 3)`` uint8 for values in [0, 1] (NaN: grey) on the continuous ramp."""
    v = np.asarray(values, dtype=np.float64)
    out = np.empty((len(v), 3), np.uint8)
    bad = ~np.isfinite(v)
    t = np.clip(np.where(bad, 0.0, v), 0.0, 1.0) * (len(_RAMP) - 1)
    lo = np.minimum(np.floor(t).astype(int), len(_RAMP) - 2)
    frac = (t - lo)[:, None]
    out[:] = np.round(_RAMP[lo] * (1 - frac) + _RAMP[lo + 1] * frac).astype(np.uint8)
    out[bad] = MISSING_COLOUR
    return out


def resize_tile(tile: np.ndarray, size: int, resample: str = "bicubic") -> Image.Image:
    """An ``(h, w, 3)`` uint8 image as a ``size x size`` PIL image."""
    if resample not in RESAMPLE:
        raise ValueError(f"unknown resample {resample!r}; choose from {sorted(RESAMPLE)}")
    img = Image.fromarray(np.ascontiguousarray(tile))
    return img if img.size == (size, size) else img.resize((size, size), RESAMPLE[resample])


def to_uint8(images: np.ndarray) -> np.ndarray:
    """Float images in [0, 1] (values outside are clamped) to uint8, rounding to nearest."""
    return np.round(np.clip(np.asarray(images, dtype=np.float32), 0.0, 1.0) * 255.0).astype(np.uint8)


def save_image(image: Image.Image, path: str, what: str = "picture") -> None:
    """Save a PIL image, choosing the format from the extension; a clear error for unknown ones."""
    import os

    ext = os.path.splitext(os.fspath(path))[1].lower()
    formats = Image.registered_extensions()
    if ext not in formats:
        raise ValueError(f"{path}: cannot write a {what} with extension {ext or '(none)'!r}; use .png, .jpg or .webp")
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    out = image.convert("RGB") if formats[ext] in ("JPEG", "BMP") else image
    out.save(path, format=formats[ext])


def shorten(text: str, limit: int, keep: str = "middle") -> str:
    """``text`` cut to ``limit`` characters with an ellipsis: in the middle, or at the start (``keep="end"``)."""
    if len(text) <= limit:
        return text
    n = max(1, limit - 1)
    if keep == "end":  # paths: the file name says most
        return "…" + text[len(text) - n:]
    return text[: n // 2] + "…" + text[len(text) - (n - n // 2):]


def paste_with_border(canvas: Image.Image, tile: Image.Image, xy: Sequence[int], colour, width: int) -> None:
    """Paste ``tile`` at ``xy`` (top-left) inside a ``width``-pixel frame of ``colour``."""
    x, y = int(xy[0]), int(xy[1])
    if width > 0:
        ImageDraw.Draw(canvas).rectangle([x - width, y - width, x + tile.width - 1 + width,
                                          y + tile.height - 1 + width], fill=tuple(colour))
    canvas.paste(tile, (x, y))
