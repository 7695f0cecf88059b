"""Track strips: for each face track, thumbnails over time and its head angles and first pose component over time."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from ..align import align_faces
from ..config import PreprocessConfig
from ..io import load_image

#: Line colours of the plot under each strip.
#: Degrees at the top and bottom of each plot (angles beyond are clipped).
RANGE = 45.0
COLOURS = {"yaw": (214, 39, 40), "pitch": (44, 160, 44), "roll": (31, 119, 180), "pose PC1": (90, 90, 90)}


def _frames_of(source: str, wanted: set[int]) -> dict[int, np.ndarray]:
    """The wanted frames of a video file, a folder of frames (sorted names), decoded once each."""
    if os.path.isdir(source):
        from ..io.inputs import IMAGE_EXTENSIONS

        names = sorted(n for n in os.listdir(source) if os.path.splitext(n)[1].lower() in IMAGE_EXTENSIONS)
        return {i: load_image(os.path.join(source, names[i])) for i in sorted(wanted) if i < len(names)}
    from ..io.video import iter_frames

    out: dict[int, np.ndarray] = {}
    last = max(wanted) if wanted else -1
    for f in iter_frames(source):
        if f.index in wanted and f.image is not None:
            out[f.index] = f.image
        if f.index >= last:
            break
    return out


def _pose_pc1(tracks: Sequence[Any]) -> list[np.ndarray]:
    """The first principal component of all tracks' unit pose codes, per track, scaled to [-RANGE, RANGE]."""
    pose = np.concatenate([t.pose for t in tracks]).astype(np.float64)
    pose /= np.maximum(np.linalg.norm(pose, axis=1, keepdims=True), 1e-12)
    centred = pose - pose.mean(0)
    if len(pose) < 2:
        return [np.zeros(len(t)) for t in tracks]
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    pc1 = centred @ vt[0]
    scale = RANGE / max(float(np.abs(pc1).max()), 1e-12)
    out, start = [], 0
    for t in tracks:
        out.append(pc1[start:start + len(t)] * scale)
        start += len(t)
    return out


def track_strips(tracks: Sequence[Any], output: str | os.PathLike | None = None, *, thumbs: int = 8,
                 thumb_size: int = 64, plot_height: int = 110,
                 preprocess: PreprocessConfig | None = None) -> Image.Image:
    """One panel per track: ``thumbs`` aligned faces spread over its span, and a plot over time.

    The plot shows yaw, pitch and roll (degrees, -45 to 45) and the first
    principal component of the pose codes (over all tracks drawn, scaled to the
    same range) against the frame number.

    Args:
        tracks: :class:`facepcl.tracking.Track` objects (e.g. from :func:`facepcl.track`).
        output: Picture to write (.png, .jpg, .webp); None: only return it.
        thumbs: Thumbnails per track (its representative frame and keyframes first, then evenly spread).
        thumb_size: Thumbnail side in pixels.
        plot_height: Height of each plot in pixels.
        preprocess: Alignment of the thumbnails (default: the standard template).

    Returns:
        The picture.

    Raises:
        ValueError: No tracks.
    """
    if not tracks:
        raise ValueError("no tracks to draw")
    pre = (preprocess or PreprocessConfig()).resized(thumb_size)
    width = thumbs * thumb_size
    label_h = 14
    panel_h = label_h + thumb_size + plot_height + 8
    canvas = Image.new("RGB", (width, panel_h * len(tracks) + 18), "white")
    draw = ImageDraw.Draw(canvas)
    x0 = 4
    for name, colour in COLOURS.items():
        draw.line([(x0, 9), (x0 + 14, 9)], fill=colour, width=2)
        draw.text((x0 + 18, 3), name, fill=(0, 0, 0))
        x0 += 24 + 7 * len(name)
    pcs = _pose_pc1(tracks)
    by_source: dict[str, set[int]] = {}
    chosen_rows = []
    for t in tracks:
        rows = sorted({int(np.searchsorted(t.frame, f)) for f in [t.summary.get("representative_frame", t.frame[0]),
                                                                    *t.summary.get("keyframes", [])]})
        rows += [int(i) for i in np.linspace(0, len(t) - 1, thumbs).round()]
        rows = sorted(dict.fromkeys(r for r in rows if 0 <= r < len(t)))
        if len(rows) > thumbs:
            keep = np.linspace(0, len(rows) - 1, thumbs).round().astype(int)
            rows = [rows[i] for i in keep]
        chosen_rows.append(rows)
        by_source.setdefault(t.source, set()).update(int(t.frame[r]) for r in rows)
    frames = {src: _frames_of(src, wanted) if os.path.exists(src) else {} for src, wanted in by_source.items()}
    for k, (t, rows, pc) in enumerate(zip(tracks, chosen_rows, pcs, strict=True)):
        top = 18 + k * panel_h
        s = t.summary
        draw.text((2, top), f"track {t.track_id}: frames {int(t.frame[0])}-{int(t.frame[-1])}, {len(t)} faces, "
                            f"representative {s.get('representative_frame')}", fill=(0, 0, 0))
        for j, r in enumerate(rows):
            image = frames.get(t.source, {}).get(int(t.frame[r]))
            box = (j * thumb_size, top + label_h)
            if image is None:
                draw.rectangle([box, (box[0] + thumb_size - 1, box[1] + thumb_size - 1)], outline=(180, 180, 180))
                continue
            crop = align_faces(image, t.kps[r][None], pre)[0][0]
            canvas.paste(Image.fromarray(crop), box)
            draw.text((box[0] + 2, box[1] + 2), str(int(t.frame[r])), fill=(255, 255, 0))
        py = top + label_h + thumb_size + 4
        draw.rectangle([(0, py), (width - 1, py + plot_height)], outline=(200, 200, 200))
        mid = py + plot_height / 2
        draw.line([(0, mid), (width, mid)], fill=(230, 230, 230))
        draw.text((2, py + 1), f"+{RANGE:g}", fill=(150, 150, 150))
        draw.text((2, py + plot_height - 11), f"-{RANGE:g}", fill=(150, 150, 150))
        span = max(int(t.frame[-1]) - int(t.frame[0]), 1)
        xs = (t.frame - t.frame[0]) / span * (width - 1)
        series = {"yaw": t.angles[:, 0], "pitch": t.angles[:, 1], "roll": t.angles[:, 2], "pose PC1": pc}
        for name, values in series.items():
            clipped = np.clip(np.nan_to_num(np.asarray(values, np.float64)), -RANGE, RANGE)
            ys = mid - clipped / RANGE * (plot_height / 2 - 2)
            points = list(zip(xs.tolist(), ys.tolist(), strict=True))
            if len(points) > 1:
                draw.line(points, fill=COLOURS[name], width=1)
    if output is not None:
        canvas.save(os.fspath(output))
    return canvas


__all__ = ["track_strips"]
