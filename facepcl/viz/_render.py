"""Drawing an :class:`~facepcl.viz.EmbeddingMap`: a layout shared by two renderers.

The layout (where each point and thumbnail goes, which points get a
thumbnail) is computed once. Two renderers draw it: matplotlib when it is
installed (``pip install "facepcl[plot]"``; axes, vector output such as .svg
and .pdf) and a Pillow-only one that always works (.png, .jpg, .webp). Both
show the same points, colours, thumbnails and legend.
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass, field

import numpy as np
from PIL import Image, ImageDraw

from ..errors import MissingExtraError
from ._draw import font, paste_with_border, ramp, save_image, shorten, text_size
from ._map import EmbeddingMap
from ._thumbs import load_thumbnails, resolve_path

RENDERERS = ("auto", "matplotlib", "pil")
PIL_FORMATS = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")
_LEGEND_W = 300
_MARGIN = 24


@dataclass
class Layout:
    """Pixel positions of a map on a ``width x height`` canvas.

    Attributes:
        width: Canvas width in pixels.
        height: Canvas height in pixels.
        box: Plot area ``(x0, y0, x1, y1)`` in pixels.
        xy: ``(N, 2)`` point centres in pixels (y grows downwards).
        radius: Dot radius in pixels.
        thumbnails: Row -> ``(S, S, 3)`` uint8 face crop drawn centred on its point.
        thumb_size: S.
        problems: Why some thumbnails could not be made.
    """

    width: int
    height: int
    box: tuple[int, int, int, int]
    xy: np.ndarray
    radius: int
    thumbnails: dict[int, np.ndarray] = field(default_factory=dict)
    thumb_size: int = 48
    problems: list[str] = field(default_factory=list)


def layout(emap: EmbeddingMap, *, size: tuple[int, int] = (1600, 1200), thumbnails: bool = True,
           max_thumbnails: int = 150, thumb_size: int = 48, seed: int = 0) -> Layout:
    """Place the points, and thumbnails where they do not overlap.

    Thumbnails are tried in a seeded random order and kept when they overlap
    no thumbnail kept before, up to ``max_thumbnails``; every point keeps its dot.
    """
    width, height = int(size[0]), int(size[1])
    if width < 400 or height < 300:
        raise ValueError(f"the picture must be at least 400x300 pixels, got {width}x{height}")
    top = _MARGIN + 64
    box = (_MARGIN + 40, top, width - _LEGEND_W - _MARGIN, height - _MARGIN - 40)
    xy = _to_pixels(emap.projection.coords, box, pad=thumb_size // 2 + 6 if thumbnails else 12)
    n = len(emap)
    radius = int(np.clip(round(7 - 1.2 * np.log10(max(n, 1))), 2, 6))
    out = Layout(width, height, box, xy, radius, thumb_size=thumb_size)
    if not thumbnails or max_thumbnails <= 0:
        return out
    cwd = emap.metadata.get("cwd")
    readable = {p: resolve_path(p, cwd) is not None for p in set(emap.paths.tolist())}
    missing = sorted(p for p, ok in readable.items() if not ok)
    if missing:
        out.problems.append(f"{len(missing)} source file(s) not found, e.g. {missing[0]} (dots instead of faces)")
    order = [int(i) for i in np.random.default_rng(seed).permutation(n) if readable[emap.paths[i]]]
    chosen = _non_overlapping(xy, order, thumb_size + 8, max_thumbnails)
    crops, problems = load_thumbnails(chosen, emap.paths, emap.frames, emap.kps, emap.sizes, emap.metadata,
                                      thumb_size)
    out.thumbnails = crops
    out.problems += problems
    return out


def _to_pixels(coords: np.ndarray, box: tuple[int, int, int, int], pad: int) -> np.ndarray:
    x0, y0, x1, y1 = box
    c = np.asarray(coords, dtype=np.float64)
    lo, hi = c.min(axis=0), c.max(axis=0)
    span = np.where(hi - lo > 0, hi - lo, 1.0)
    t = (c - lo) / span
    t = np.where(hi - lo > 0, t, 0.5)
    px = x0 + pad + t[:, 0] * (x1 - x0 - 2 * pad)
    py = y1 - pad - t[:, 1] * (y1 - y0 - 2 * pad)  # up is up
    return np.stack([px, py], axis=1)


def _non_overlapping(xy: np.ndarray, order: list[int], side: int, limit: int) -> list[int]:
    cells: dict[tuple[int, int], list[int]] = {}
    kept: list[int] = []
    for i in order:
        cx, cy = int(xy[i, 0] // side), int(xy[i, 1] // side)
        near = [j for dx in (-1, 0, 1) for dy in (-1, 0, 1) for j in cells.get((cx + dx, cy + dy), ())]
        if any(abs(xy[i, 0] - xy[j, 0]) < side and abs(xy[i, 1] - xy[j, 1]) < side for j in near):
            continue
        cells.setdefault((cx, cy), []).append(i)
        kept.append(i)
        if len(kept) >= limit:
            break
    return kept


def choose_renderer(renderer: str, output: str | None = None) -> str:
    """The renderer to use: matplotlib for "auto" when installed, else Pillow; checks the output format."""
    if renderer not in RENDERERS:
        raise ValueError(f"unknown renderer {renderer!r}; choose from {', '.join(RENDERERS)}")
    have_mpl = importlib.util.find_spec("matplotlib") is not None
    ext = os.path.splitext(output)[1].lower() if output else ".png"
    if renderer == "matplotlib" and not have_mpl:
        raise MissingExtraError('the matplotlib renderer needs matplotlib: pip install "facepcl[plot]" (or use the '
                          "Pillow renderer: renderer 'pil')")
    chosen = renderer if renderer != "auto" else ("matplotlib" if have_mpl else "pil")
    if chosen == "pil" and ext not in PIL_FORMATS:
        hint = ' (install matplotlib, pip install "facepcl[plot]", for .svg and .pdf)' if not have_mpl else ""
        raise ValueError(f"{output}: the Pillow renderer writes {', '.join(PIL_FORMATS)}, not {ext or '(none)'}{hint}")
    return chosen


def render_pil(emap: EmbeddingMap, lay: Layout) -> Image.Image:
    """Draw the map with Pillow alone."""
    canvas = Image.new("RGB", (lay.width, lay.height), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    big, mid, small = font(22), font(16), font(14)
    draw.text((_MARGIN, _MARGIN), shorten(emap.title, 110), fill=(0, 0, 0), font=big)
    subtitle = f"colour: {emap.colouring.name}" + (f"  ·  {emap.notes[0]}" if emap.notes else "")
    draw.text((_MARGIN, _MARGIN + 32), shorten(subtitle, 140), fill=(90, 90, 90), font=small)
    x0, y0, x1, y1 = lay.box
    draw.rectangle([x0, y0, x1, y1], outline=(200, 200, 200), width=1)
    ax_x, ax_y = emap.projection.axis_labels
    tw, _ = text_size(draw, ax_x, mid)
    draw.text(((x0 + x1 - tw) // 2, y1 + 10), ax_x, fill=(60, 60, 60), font=mid)
    _vertical_text(canvas, ax_y, mid, (x0 - 30, (y0 + y1) // 2))
    colours = emap.colouring.colours
    r = lay.radius
    for i in range(len(emap)):
        x, y = lay.xy[i]
        draw.ellipse([x - r, y - r, x + r, y + r], fill=tuple(int(c) for c in colours[i]), outline=(40, 40, 40))
    half = lay.thumb_size // 2
    for i, crop in lay.thumbnails.items():
        x, y = lay.xy[i]
        paste_with_border(canvas, Image.fromarray(crop), (round(x) - half, round(y) - half), colours[i], 3)
    _legend_pil(canvas, emap, (lay.width - _LEGEND_W, y0), mid, small)
    return canvas


def _vertical_text(canvas: Image.Image, text: str, fnt, centre: tuple[int, int]) -> None:
    probe = ImageDraw.Draw(canvas)
    w, h = text_size(probe, text, fnt)
    strip = Image.new("RGB", (w + 4, h + 4), (255, 255, 255))
    ImageDraw.Draw(strip).text((2, 2), text, fill=(60, 60, 60), font=fnt)
    strip = strip.rotate(90, expand=True)
    canvas.paste(strip, (centre[0] - strip.width // 2, centre[1] - strip.height // 2))


def _legend_pil(canvas: Image.Image, emap: EmbeddingMap, origin: tuple[int, int], mid, small) -> None:
    draw = ImageDraw.Draw(canvas)
    x, y = origin[0] + 12, origin[1]
    draw.text((x, y), shorten(emap.colouring.name, 28), fill=(0, 0, 0), font=mid)
    y += 30
    col = emap.colouring
    if col.kind == "continuous":
        bar_h = min(300, canvas.height - y - 60)
        for k in range(bar_h):
            t = 1 - k / max(bar_h - 1, 1)
            draw.line([x, y + k, x + 24, y + k], fill=tuple(int(c) for c in ramp(np.array([t]))[0]))
        lo, hi = col.limits
        draw.text((x + 32, y - 2), f"{hi:.4g}", fill=(0, 0, 0), font=small)
        draw.text((x + 32, y + bar_h - 14), f"{lo:.4g}", fill=(0, 0, 0), font=small)
        return
    for label, colour, count in col.legend:
        if y > canvas.height - 40:
            draw.text((x, y), "…", fill=(0, 0, 0), font=small)
            break
        draw.rectangle([x, y + 2, x + 16, y + 18], fill=tuple(colour), outline=(40, 40, 40))
        draw.text((x + 24, y + 2), f"{shorten(label, 24, keep='end')} ({count})", fill=(0, 0, 0), font=small)
        y += 24


def render_matplotlib(emap: EmbeddingMap, lay: Layout):
    """Draw the map with matplotlib; returns a ``matplotlib.figure.Figure`` (no pyplot state is touched)."""
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D
    from matplotlib.offsetbox import AnnotationBbox, OffsetImage

    dpi = 100
    fig = Figure(figsize=(lay.width / dpi, lay.height / dpi), dpi=dpi)
    x0, y0, x1, y1 = lay.box
    ax = fig.add_axes((x0 / lay.width, 1 - y1 / lay.height, (x1 - x0) / lay.width, (y1 - y0) / lay.height))
    # Pixel positions from the shared layout, so both renderers place points and thumbnails alike.
    px, py = lay.xy[:, 0], lay.height - lay.xy[:, 1]
    colours = emap.colouring.colours / 255.0
    ax.scatter(px, py, c=colours, s=(2 * lay.radius) ** 2 * 0.6, edgecolors=(0.15, 0.15, 0.15), linewidths=0.5,
               zorder=2)
    for i, crop in lay.thumbnails.items():
        box = AnnotationBbox(OffsetImage(crop, zoom=1, dpi_cor=False), (px[i], py[i]), frameon=True, pad=0.15,
                             bboxprops={"edgecolor": colours[i], "linewidth": 2.5})
        box.set_zorder(3)
        ax.add_artist(box)
    ax.set_xlim(x0, x1)
    ax.set_ylim(lay.height - y1, lay.height - y0)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_xlabel(emap.projection.axis_labels[0], fontsize=13)
    ax.set_ylabel(emap.projection.axis_labels[1], fontsize=13)
    fig.text(_MARGIN / lay.width, 1 - (_MARGIN + 22) / lay.height, shorten(emap.title, 110), fontsize=16)
    subtitle = f"colour: {emap.colouring.name}" + (f"  ·  {emap.notes[0]}" if emap.notes else "")
    fig.text(_MARGIN / lay.width, 1 - (_MARGIN + 48) / lay.height, shorten(subtitle, 140), fontsize=11,
             color=(0.35, 0.35, 0.35))
    col = emap.colouring
    if col.kind == "continuous":
        from matplotlib.cm import ScalarMappable
        from matplotlib.colors import ListedColormap, Normalize

        cmap = ListedColormap(ramp(np.linspace(0, 1, 256)) / 255.0)
        cax = fig.add_axes(((lay.width - _LEGEND_W + 12) / lay.width, 1 - (y0 + 330) / lay.height,
                            24 / lay.width, 300 / lay.height))
        fig.colorbar(ScalarMappable(Normalize(*col.limits), cmap), cax=cax, label=col.name)
    else:
        handles = [Line2D([], [], marker="s", linestyle="", markersize=11, markerfacecolor=np.array(c) / 255.0,
                          markeredgecolor=(0.15, 0.15, 0.15), label=f"{shorten(label, 24, keep='end')} ({count})")
                   for label, c, count in col.legend]
        fig.legend(handles=handles, title=col.name, loc="upper left", frameon=False, fontsize=11, title_fontsize=12,
                   bbox_to_anchor=((lay.width - _LEGEND_W) / lay.width, 1 - y0 / lay.height))
    return fig


def render(emap: EmbeddingMap, lay: Layout, renderer: str = "pil"):
    """A PIL image ("pil") or a matplotlib Figure ("matplotlib") of the map."""
    return render_matplotlib(emap, lay) if renderer == "matplotlib" else render_pil(emap, lay)


def save_map(emap: EmbeddingMap, output: str, lay: Layout, renderer: str) -> None:
    """Write the map to ``output`` (format from the extension)."""
    if renderer == "matplotlib":
        folder = os.path.dirname(os.path.abspath(output))
        os.makedirs(folder, exist_ok=True)
        fig = render_matplotlib(emap, lay)
        try:
            fig.savefig(output, dpi=100)
        except ValueError as e:  # unknown format
            raise ValueError(f"{output}: {e}") from e
    else:
        save_image(render_pil(emap, lay), output, "map")
