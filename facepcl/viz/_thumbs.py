"""Face thumbnails for a map: re-cropped from the source files with the export's own alignment."""

from __future__ import annotations

import logging
import os
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..align import align_faces, full_image_matrix, warp
from ..config import PreprocessConfig
from ..errors import ImageLoadError
from ..io import load_image

log = logging.getLogger(__name__)


def preprocess_of(meta: dict[str, Any]) -> PreprocessConfig:
    """The preprocessing an export recorded (template, interpolation, border), or the default one."""
    pre = meta.get("preprocess")
    if not isinstance(pre, dict):
        return PreprocessConfig()
    known = set(PreprocessConfig.__dataclass_fields__)
    return PreprocessConfig(**{k: v for k, v in pre.items() if k in known})


def resolve_path(path: str, cwd: str | None) -> str | None:
    """Where a stored path is readable now: as given, else relative to the export's working directory."""
    if os.path.isabs(path):
        return path if os.path.exists(path) else None
    if os.path.exists(path):
        return path
    if cwd and os.path.exists(os.path.join(cwd, path)):
        return os.path.join(cwd, path)
    return None


def load_thumbnails(rows: Sequence[int], paths: Sequence[str], frames: np.ndarray, kps: np.ndarray,
                    sizes: np.ndarray, meta: dict[str, Any], size: int) -> tuple[dict[int, np.ndarray], list[str]]:
    """Aligned crops of some rows of an export, the way ``facepcl embed`` cropped them.

    Args:
        rows: Which rows to crop.
        paths: Stored path of every row.
        frames: ``(N,)`` video frame numbers (-1 for still images).
        kps: ``(N, 5, 2)`` landmarks in image pixels (NaN: the face was the whole image).
        sizes: ``(N, 2)`` stored image (height, width), to notice files that changed since the export.
        meta: The export's metadata (``preprocess`` and ``cwd`` are used).
        size: Side of the thumbnails in pixels (the template scales with it).

    Returns:
        ``(thumbnails, problems)``: row -> ``(size, size, 3)`` uint8 crop, and
        one message per source that could not be used.
    """
    pre = preprocess_of(meta).resized(size)
    cwd = meta.get("cwd")
    by_source: dict[str, list[int]] = defaultdict(list)
    for r in rows:
        by_source[paths[r]].append(r)
    out: dict[int, np.ndarray] = {}
    problems: list[str] = []
    for stored, members in by_source.items():
        where = resolve_path(stored, cwd)
        if where is None:
            problems.append(f"{stored}: not found (from here or from the export's folder {cwd})")
            continue
        stills = [r for r in members if frames[r] < 0]
        videos = [r for r in members if frames[r] >= 0]
        images: dict[int, np.ndarray] = {}
        try:
            if stills:
                image = load_image(where)
                for r in stills:
                    images[r] = image
            if videos:
                images.update(_video_frames(where, {r: int(frames[r]) for r in videos}))
        except ImageLoadError as e:
            problems.append(str(e))
            continue
        for r in members:
            image = images.get(r)
            if image is None:
                problems.append(f"{stored} frame {int(frames[r])}: not in the video any more")
                continue
            if tuple(image.shape[:2]) != tuple(int(v) for v in sizes[r]):
                problems.append(f"{stored}: is {image.shape[1]}x{image.shape[0]} now, was "
                                f"{int(sizes[r][1])}x{int(sizes[r][0])} when embedded (the file changed)")
                continue
            out[r] = _crop(image, kps[r], pre)
    return out, problems


def _crop(image: np.ndarray, kps: np.ndarray, pre: PreprocessConfig) -> np.ndarray:
    if np.isfinite(kps).all():
        return align_faces(image, kps[None], pre)[0][0]
    # Not detected (aligned inputs, or on_no_face="full_image"): the whole image, as the embedder took it.
    m = full_image_matrix(image.shape[0], image.shape[1], pre.crop_size)
    return warp(image, m, pre.crop_size, interpolation=pre.interpolation, border=pre.border)


def _video_frames(path: str, wanted: dict[int, int]) -> dict[int, np.ndarray]:
    from ..io.video import iter_frames

    need = defaultdict(list)
    for row, frame in wanted.items():
        need[frame].append(row)
    out: dict[int, np.ndarray] = {}
    last = max(need)
    for fr in iter_frames(path, every=1, after=min(need) - 1):
        if fr.index in need and fr.image is not None:
            for row in need[fr.index]:
                out[row] = fr.image
        if fr.index >= last:
            break
    return out
