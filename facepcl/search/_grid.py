"""The picture of a search: one row per query, the query's face then its neighbours with their scores."""

from __future__ import annotations

import os
import re
from collections import defaultdict
from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw

from ..viz._draw import font, paste_with_border, resize_tile, shorten
from ..viz._thumbs import load_thumbnails, resolve_path
from ._index import FaceIndex, SearchResult
from ._query import Query

BACKGROUND = (255, 255, 255)
QUERY_FRAME = (31, 119, 180)
MISSING = (220, 220, 220)


_BYTE_ESCAPE = re.compile(rb"\\x([0-9a-f]{2})")


def disk_path(stored: str, cwd: str | None) -> str:
    """The name on disk of a stored path: exports write each byte of a non-UTF-8 name as ``\\xNN``.

    Returns ``stored`` itself when it names a file (or when its escapes name
    none), else the name with those bytes restored (as a ``str`` with
    surrogate escapes, which ``open`` and ``os.fsencode`` turn back into the bytes).
    """
    if "\\x" not in stored or resolve_path(stored, cwd) is not None:
        return stored
    raw = _BYTE_ESCAPE.sub(lambda m: bytes([int(m.group(1), 16)]), stored.encode("utf-8", "surrogateescape"))
    candidate = os.fsdecode(raw)
    return candidate if resolve_path(candidate, cwd) is not None else stored


def neighbour_crops(index: FaceIndex, rows: Sequence[int], size: int) -> tuple[dict[int, np.ndarray], list[str]]:
    """Aligned crops of index rows, re-cut from their source files the way their export cut them."""
    by_export: dict[int, list[int]] = defaultdict(list)
    for r in set(int(r) for r in rows if r >= 0):
        by_export[int(index.rows["export"][r])].append(r)
    kps = np.asarray(index.rows["kps"], np.float32).reshape(-1, 5, 2)
    sizes = np.stack([index.rows["height"], index.rows["width"]], axis=1)
    crops: dict[int, np.ndarray] = {}
    problems: list[str] = []
    paths = list(index.rows["path"])
    for number, members in by_export.items():
        meta = index.exports[number]
        for r in members:
            paths[r] = disk_path(paths[r], meta.get("cwd"))
        got, bad = load_thumbnails(sorted(members), paths, index.rows["frame"], kps, sizes, meta, size)
        crops.update(got)
        problems.extend(bad)
    return crops, problems


def render_search_grid(index: FaceIndex, queries: Sequence[Query], result: SearchResult, *, tile: int = 96,
                       labels: bool = True) -> tuple[Image.Image, list[str]]:
    """One row per query: its aligned face (or a blank tile for raw vectors), then the k neighbours.

    Args:
        index: The searched index (neighbours are re-cropped from their source files).
        queries: The queries, in the order of ``result``.
        result: What :meth:`FaceIndex.search` returned for them.
        tile: Side of each face tile in pixels.
        labels: Write the query name and each neighbour's score and file name.

    Returns:
        ``(picture, problems)``: problems name neighbours whose source file could not be read (grey tiles).
    """
    k = result.rows.shape[1] if len(result.rows) else 0
    crops, problems = neighbour_crops(index, result.rows.reshape(-1).tolist(), tile)
    small = font(max(10, tile // 8))
    pad, gap, text_h = 6, 8, (2 * (tile // 8 + 4) if labels else 0)
    width = pad + (tile + gap) * (k + 1) + gap
    row_h = tile + text_h + gap
    canvas = Image.new("RGB", (width, pad + row_h * max(1, len(queries))), BACKGROUND)
    draw = ImageDraw.Draw(canvas)
    for qi, q in enumerate(queries):
        y = pad + qi * row_h
        qtile = (resize_tile(q.crop, tile) if q.crop is not None else Image.new("RGB", (tile, tile), MISSING))
        paste_with_border(canvas, qtile, (pad, y), QUERY_FRAME, 3)
        if labels:
            draw.text((pad, y + tile + 3), shorten(q.label, tile // 6, keep="end"), fill=QUERY_FRAME, font=small)
        for j in range(k):
            r = int(result.rows[qi, j])
            x = pad + (tile + gap) * (j + 1) + gap
            if r < 0:
                continue
            crop = crops.get(r)
            canvas.paste(resize_tile(crop, tile) if crop is not None else Image.new("RGB", (tile, tile), MISSING),
                         (x, y))
            if labels:
                text = f"{result.scores[qi, j]:.3f}\n{shorten(os.path.basename(index.rows['path'][r]), tile // 6)}"
                draw.multiline_text((x, y + tile + 3), text, fill=(0, 0, 0), font=small, spacing=2)
    return canvas, problems

